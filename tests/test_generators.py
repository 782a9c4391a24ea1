"""Generators: same size out as in, values in [-1, 1], dropout only when asked, checkpoints."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from cycada_tf import errors
from cycada_tf import kernels
from cycada_tf import models


def _small(name, out_channels, dropout=0.0):
  """Narrow variants with the real topology, so the tests stay fast."""
  if name == 'digit':
    return models.DigitGenerator(out_channels, filters=4, dropout=dropout)
  return models.ResnetGenerator(out_channels, filters=4, num_blocks=2, dropout=dropout)


def _images(shape, seed=0):
  return tf.random.stateless_uniform(shape, seed=(seed, 0), minval=-1.0, maxval=1.0)


@pytest.mark.parametrize('name', ['digit', 'resnet9'])
@pytest.mark.parametrize('size, in_channels, out_channels', [(28, 1, 1), (32, 3, 3), (32, 1, 3)])
def test_same_size_out_and_tanh_range(name, size, in_channels, out_channels):
  keras.utils.set_random_seed(0)
  generator = _small(name, out_channels)
  # Large inputs push pre-activations far out, so tanh saturation is exercised too.
  out = generator(20.0 * _images((2, size, size, in_channels)), training=False).numpy()
  assert out.shape == (2, size, size, out_channels)
  assert out.min() >= -1.0 and out.max() <= 1.0
  assert out.std() > 0  # Not a constant image.


@pytest.mark.parametrize('name', ['digit', 'resnet9'])
def test_build_generator_default_width(name):
  generator = models.build_generator(name, 3)
  assert generator(_images((1, 32, 32, 3)), training=False).shape == (1, 32, 32, 3)


def test_resnet9_has_nine_blocks_and_release_widths():
  generator = models.build_generator('resnet9', 1)
  generator(_images((1, 28, 28, 1)))
  assert len(generator.blocks) == 9
  assert generator.blocks[0].conv1.kernel.shape == (3, 3, 256, 256)
  assert generator.encoder[0].layers[0].kernel.shape == (7, 7, 1, 64)
  assert generator.to_image.kernel.shape == (7, 7, 64, 1)


def test_parameter_counts_by_hand_only_the_last_conv_has_a_bias():
  # Width f = 4, 1 → 1 channels (digit) and 3 → 3 (resnet9, 2 blocks). Every conv but the last
  # feeds an instance norm and has no bias; a transposed conv's kernel is 3·3·out·in, the same
  # count as a conv's. The release's norms have no parameters; affine ones add 2·C each.
  in_norms = 2 * (4 + 8 + 16) + 2 * 2 * (2 * 16) + 2 * (8 + 4)     # encoder, 2 blocks, decoder
  shared = (3 * 3 * 4 * 8 + 3 * 3 * 8 * 16                           # encoder convs 2 and 3
            + 2 * 2 * 3 * 3 * 16 * 16                                # 2 blocks × 2 convs
            + 3 * 3 * 16 * 8 + 3 * 3 * 8 * 4)                        # decoder deconvs
  digit = _small('digit', 1)
  digit(_images((1, 28, 28, 1)))
  assert digit.count_params() == 3 * 3 * 1 * 4 + shared + (3 * 3 * 4 * 1 + 1) == 12_169
  resnet = _small('resnet9', 3)
  resnet(_images((1, 32, 32, 3)))
  assert resnet.count_params() == 7 * 7 * 3 * 4 + shared + (7 * 7 * 4 * 3 + 3) == 13_275
  affine = models.build_generator('digit', 1, filters=4, affine_norm=True)
  affine(_images((1, 28, 28, 1)))
  assert affine.count_params() == digit.count_params() + in_norms
  for generator in (digit, resnet):
    assert [w.path for w in generator.weights if w.path.endswith('bias')] == [
        f'{generator.name}/to_image/bias']


def test_instance_norm_cancels_a_per_channel_bias():
  """Why convs in front of instance norm have no bias: a per-channel constant changes nothing."""
  norm = models.instance_norm()
  x = 3.0 * _images((2, 8, 8, 5))
  shift = tf.random.stateless_normal((5,), seed=(4, 0))
  np.testing.assert_allclose(norm(x + shift).numpy(), norm(x).numpy(), atol=1e-5)


@pytest.mark.parametrize('name', ['digit', 'resnet9'])
def test_dropout_makes_training_stochastic(name):
  x = _images((2, 28, 28, 1))
  generator = _small(name, 1, dropout=0.5)
  inference = generator(x, training=False).numpy()
  np.testing.assert_array_equal(generator(x, training=False).numpy(), inference)
  assert not np.allclose(generator(x, training=True).numpy(), inference)


@pytest.mark.parametrize('name', ['digit', 'resnet9'])
def test_without_dropout_training_flag_changes_nothing(name):
  # Instance norm has no batch statistics, so only dropout may depend on `training`.
  x = _images((2, 28, 28, 1))
  generator = _small(name, 1)
  np.testing.assert_allclose(generator(x, training=True).numpy(),
                             generator(x, training=False).numpy(), atol=1e-6)


@pytest.mark.parametrize('name', ['digit', 'resnet9'])
def test_output_does_not_depend_on_other_batch_members(name):
  x = _images((3, 32, 32, 3))
  generator = _small(name, 3)
  together = generator(x).numpy()
  alone = generator(x[:1]).numpy()
  np.testing.assert_allclose(together[:1], alone, atol=1e-5)


def test_sizes_not_divisible_by_4_are_rejected():
  with pytest.raises(errors.UserError, match='divisible by 4'):
    _small('resnet9', 1)(_images((1, 30, 30, 1)))


@pytest.mark.parametrize('name', ['digit', 'resnet9'])
def test_tf_function_and_checkpoint(name, tmp_path):
  x = _images((2, 28, 28, 1))
  keras.utils.set_random_seed(1)
  generator = _small(name, 1)
  eager = generator(x).numpy()
  np.testing.assert_allclose(tf.function(lambda v: generator(v))(x).numpy(), eager, atol=1e-5)

  path = tf.train.Checkpoint(generator=generator).write(str(tmp_path / 'ckpt'))
  saved = [n for n, _ in tf.train.list_variables(path) if n.startswith('generator/')]
  assert len(saved) == len(generator.weights)
  keras.utils.set_random_seed(2)
  fresh = _small(name, 1)
  assert not np.allclose(fresh(x).numpy(), eager)
  tf.train.Checkpoint(generator=fresh).read(path).assert_existing_objects_matched()
  np.testing.assert_allclose(fresh(x).numpy(), eager, atol=1e-6)


def test_reflection_pad_mirrors_without_repeating_the_edge():
  x = tf.reshape(tf.constant([1.0, 2.0, 3.0]), (1, 1, 3, 1))
  x = tf.tile(x, (1, 3, 1, 1))  # Rows [1, 2, 3] × 3.
  padded = models.ReflectionPad2D(1)(x).numpy()[0, :, :, 0]
  assert padded.shape == (5, 5)
  np.testing.assert_array_equal(padded[2], [2, 1, 2, 3, 2])


def test_unknown_generator_lists_valid_names():
  with pytest.raises(errors.UserError, match=r"'digit', 'resnet9'"):
    models.build_generator('unet', 3)


def test_instance_norm_layer_loads_group_norm_checkpoints(tmp_path):
  """Runs trained with `GroupNormalization(groups=-1)` (before the fused layer) still restore."""
  keras.utils.set_random_seed(0)
  old = keras.layers.GroupNormalization(groups=-1, epsilon=1e-5)
  old.build((None, 6, 6, 5))
  old.set_weights([np.linspace(0.5, 1.5, 5), np.linspace(-1, 1, 5)])
  path = tf.train.Checkpoint(norm=old).save(str(tmp_path / 'ckpt'))
  new = models.instance_norm(affine=True)
  new.build((None, 6, 6, 5))
  tf.train.Checkpoint(norm=new).restore(path).assert_existing_objects_matched()
  images = 3.0 * _images((2, 6, 6, 5)) + 1.0
  np.testing.assert_allclose(new(images).numpy(), old(images).numpy(), rtol=1e-5, atol=1e-5)


def test_resnet_generator_trains_in_bfloat16_with_the_swapped_filter_gradient():
  keras.utils.set_random_seed(0)
  previous = keras.config.dtype_policy()
  keras.config.set_dtype_policy('mixed_bfloat16')
  try:
    # 128 channels at 32 / 4 = 8×8: the residual convs take `ops.conv2d`'s swapped path.
    generator = models.ResnetGenerator(3, filters=32, num_blocks=1)
    images = _images((2, 32, 32, 3))
    with kernels.scope('cpu_tuned', filter_gradient='swapped'), tf.GradientTape() as tape:
      loss = tf.reduce_mean(tf.square(generator(images, training=True) - images))
    grads = tape.gradient(loss, generator.trainable_variables)
  finally:
    keras.config.set_dtype_policy(previous)
  assert all(g is not None and g.dtype == tf.float32 for g in grads)
  assert all(bool(tf.reduce_all(tf.math.is_finite(g))) for g in grads)
  residual = [v for v, g in zip(generator.trainable_variables, grads)
              if v.shape == (3, 3, 128, 128)]
  assert len(residual) == 2
  assert all(float(tf.reduce_max(tf.abs(g))) > 0 for v, g in zip(
      generator.trainable_variables, grads) if v.shape == (3, 3, 128, 128))


@pytest.mark.parametrize('strides,padding,use_bias', [(2, 'same', False), (2, 'valid', True),
                                                      (1, 'same', True)])
def test_fast_backward_conv2d_transpose_equals_keras_conv2d_transpose(strides, padding, use_bias):
  from cycada_tf.models import generators  # pylint: disable=g-import-not-at-top
  ours = generators.FastBackwardConv2DTranspose(6, 3, strides=strides, padding=padding,
                                                use_bias=use_bias, activation='relu')
  theirs = keras.layers.Conv2DTranspose(6, 3, strides=strides, padding=padding,
                                        use_bias=use_bias, activation='relu')
  images = _images((2, 5, 7, 4))
  ours.build(images.shape)
  theirs.build(images.shape)
  assert [v.shape for v in ours.weights] == [v.shape for v in theirs.weights]
  for mine, other in zip(ours.weights, theirs.weights):
    mine.assign(tf.random.normal(mine.shape, seed=1))
    other.assign(mine)
  assert tuple(ours.compute_output_shape(images.shape)) == tuple(ours(images).shape)
  np.testing.assert_allclose(ours(images).numpy(), theirs(images).numpy(), rtol=1e-5, atol=1e-5)


def test_fast_backward_conv2d_transpose_rejects_output_padding():
  from cycada_tf.models import generators  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match='output_padding'):
    generators.FastBackwardConv2DTranspose(4, 3, strides=2, output_padding=1)


@pytest.mark.parametrize('filter_gradient, backprop_filter_ops', [('swapped', 4),
                                                                       ('native', 8)])
def test_resnet_generator_bf16_filter_gradients_swapped_where_measured_faster(
    filter_gradient, backprop_filter_ops):
  """Swapped: only the 32×32-map convs (stem, first down, last up, output) keep TF's filter
  gradient. Native (AMX CPUs' default): all eight convolutions do."""
  previous = keras.config.dtype_policy()
  keras.config.set_dtype_policy('mixed_bfloat16')
  try:
    # filters=32 at 32×32: 64 channels at 16×16 and 128 at 8×8, the swap's thresholds.
    generator = models.ResnetGenerator(3, filters=32, num_blocks=1)
    images = _images((2, 32, 32, 3))
    generator(images)

    @tf.function
    def grads(images):
      with tf.GradientTape() as tape:
        loss = tf.reduce_mean(generator(images, training=True))
      return tape.gradient(loss, generator.trainable_variables)

    with kernels.scope('cpu_tuned', filter_gradient=filter_gradient):
      graph = grads.get_concrete_function(images).graph.as_graph_def()
  finally:
    keras.config.set_dtype_policy(previous)
  nodes = list(graph.node) + [node for f in graph.library.function for node in f.node_def]
  filter_grads = [node for node in nodes if node.op == 'Conv2DBackpropFilter']
  assert len(filter_grads) == backprop_filter_ops, [node.name for node in filter_grads]


@pytest.mark.parametrize('network, shape', [
    (lambda: models.DigitGenerator(1, filters=8), (28, 28, 1)),
    (lambda: models.ResnetGenerator(3, filters=8, num_blocks=3), (32, 32, 3)),
    (lambda: models.build_image_discriminator('patchgan', filters=8), (32, 32, 3)),
    (lambda: models.build_image_discriminator('conv6', filters=8), (28, 28, 1)),
    (lambda: models.OnlineSemanticClassifier(filters=8), (32, 32, 1)),
    (lambda: models.LeNet(), (28, 28, 1)),
    (lambda: models.DTN(), (32, 32, 3)),
], ids=['digit', 'resnet9', 'patchgan', 'conv6', 'online_classifier', 'lenet', 'dtn'])
def test_no_two_layers_start_from_the_same_draws(network, shape):
  """Each layer's initial weights are its own draw, as the release's `init_weights` makes them.

  A Keras 3 initializer instance returns the same stream on every call, so layers sharing one
  started equal (a residual block's two convolutions were identical) or with a shared prefix.
  """
  net = network()
  net(tf.zeros((1,) + shape))
  kernels = [v.numpy().ravel() for v in net.trainable_variables if len(v.shape) >= 2]
  assert len(kernels) >= 3
  for i, a in enumerate(kernels):
    for b in kernels[i + 1:]:
      n = min(a.size, b.size)
      assert not np.allclose(a[:n], b[:n]), (a.size, b.size)
