"""Segmentation task nets and D_feat (docs/method.md §4): sizes at any input, float32 outputs,
backbone weights (offline ImageNet, local files), parameter counts, the registry, tracing,
checkpoints."""

import math
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from cycada_tf import errors
from cycada_tf import models
from cycada_tf.models import segmentation
from tests import conftest

ODD_AND_EVEN = [(37, 53), (64, 96)]


def _images(shape, seed=0):
  return tf.random.stateless_uniform(shape, seed=(seed, 0), minval=-1.0, maxval=1.0)


def _small_fcn(num_classes=5, **options):
  """FCN8s with narrow fc6 / fc7: fc6 alone is 103M parameters at the real width of 4096."""
  options.setdefault('backbone_weights', 'random')
  return models.FCN8s(num_classes, fc_channels=16, **options)


@pytest.fixture(scope='module')
def small_fcn():
  keras.utils.set_random_seed(0)
  return _small_fcn()


@pytest.fixture(scope='module')
def small_drn():
  keras.utils.set_random_seed(0)
  return models.DRN26(5, width=0.25)


@pytest.mark.parametrize('size', ODD_AND_EVEN)
def test_fcn8s_scores_every_input_pixel(small_fcn, size):
  logits, features = small_fcn(_images((2,) + size + (3,)), training=False)
  assert logits.shape == (2,) + size + (5,) and logits.dtype == tf.float32
  # Ceil-mode pools: fc7 is at stride 32, ceil(H / 32) × ceil(W / 32).
  assert features.shape == (2, math.ceil(size[0] / 32), math.ceil(size[1] / 32), 16)
  assert features.dtype == tf.float32


@pytest.mark.parametrize('width, channels', [(0.25, 128), (1.0, 512)])
@pytest.mark.parametrize('size', ODD_AND_EVEN)
def test_drn26_scores_every_input_pixel(width, channels, size):
  net = models.DRN26(7, width=width)
  logits, features = net(_images((1,) + size + (3,)), training=False)
  assert logits.shape == (1,) + size + (7,) and logits.dtype == tf.float32
  # Output stride 8: three stride-2 levels, each ceil(n / 2) (symmetric padding).
  assert features.shape == (1, math.ceil(size[0] / 8), math.ceil(size[1] / 8), channels)


def test_upsample_keeps_coarse_rows_centred_on_the_fine_grid():
  # A ramp at stride 2 (row i centred at 2i + 0.5 on the fine grid) upsamples to the fine ramp
  # (value = row / 2 - 0.25) away from the clamped edges, then crops to the odd size.
  coarse = tf.reshape(tf.range(4, dtype=tf.float32), (1, 4, 1, 1)) * tf.ones((1, 4, 3, 1))
  fine = segmentation.upsample(coarse, 2, (7, 5)).numpy()[0, :, 0, 0]
  assert fine.shape == (7,)
  np.testing.assert_allclose(fine[1:], np.arange(1, 7) / 2 - 0.25)


def test_drn26_upsamples_with_align_corners_as_the_release(small_drn):
  images = _images((1, 33, 41, 3))
  logits, features = small_drn(images)
  scores = small_drn.scores(features)  # [1, 5, 6, 5] at stride 8.
  # align_corners: the corner pixels are the corner scores exactly.
  np.testing.assert_allclose(logits[0, 0, 0].numpy(), scores[0, 0, 0].numpy(), atol=1e-5)
  np.testing.assert_allclose(logits[0, -1, -1].numpy(), scores[0, -1, -1].numpy(), atol=1e-5)


def test_drn26_levels_follow_drn_c_26(small_drn):
  blocks = small_drn.blocks
  assert len(blocks) == sum(models.DRN26.BLOCKS) == 12
  assert [b.stride for b in blocks] == [1, 2, 2, 1, 2, 1, 1, 1, 1, 1, 1, 1]
  assert [b.dilation for b in blocks] == [1, 1, 1, 1, 1, 1, 2, 2, 4, 4, 2, 1]
  assert [b.residual for b in blocks] == [True] * 10 + [False] * 2
  # Shortcut projections where the shape changes: levels 2, 3, 4 (stride) and 5, 6 (channels).
  assert [b.downsample is not None for b in blocks] == [
      False, True, True, False, True, False, True, False, True, False, False, False]
  assert small_drn.channels == (4, 8, 16, 32, 64, 128, 128, 128)  # 0.25 ×, at least 4.
  assert models.DRN26(3, width=0.1).channels[:3] == (4, 4, 6)


def test_drn26_stride_two_pads_symmetrically_like_the_release():
  block = segmentation.BasicBlock(4, 4, stride=2)
  x = _images((1, 8, 8, 4))
  out = block(x)
  assert out.shape == (1, 4, 4, 4)
  # Main path: PyTorch's padding=1 on both sides, so output row i reads rows 2i - 1 .. 2i + 1,
  # centred on the 1×1 stride-2 shortcut's sample 2i.
  padded = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])
  expected = tf.nn.conv2d(padded, block.conv1.kernel, 2, 'VALID')
  np.testing.assert_allclose(block.conv1(padded).numpy(), expected.numpy(), atol=1e-5)


def test_outputs_are_float32_under_mixed_bfloat16():
  previous = keras.mixed_precision.global_policy()
  keras.mixed_precision.set_global_policy('mixed_bfloat16')
  try:
    nets = {'fcn8s': _small_fcn(), 'drn26': models.DRN26(5, width=0.25),
            'd_feat': models.build_score_map_discriminator(hidden=(8, 4))}
    for name, net in nets.items():
      x = tf.zeros((2, 19, 21, 5)) if name == 'd_feat' else _images((2, 37, 53, 3))
      outputs = net(x, training=True)
      outputs = outputs if isinstance(outputs, tuple) else (outputs,)
      assert all(o.dtype == tf.float32 for o in outputs), name
      assert all(np.isfinite(o.numpy()).all() for o in outputs), name
      layers = net._flatten_layers()  # pylint: disable=protected-access
      assert any(l.compute_dtype == 'bfloat16' for l in layers), name
  finally:
    keras.mixed_precision.set_global_policy(previous)


def test_imagenet_offline_is_a_one_line_user_error(monkeypatch):
  def offline(*args, **kwargs):
    raise Exception('URL fetch failure on https://storage.googleapis.com/...: None -- '
                    '[Errno -3] Temporary failure in name resolution\nmore detail')
  # Keras' download function, so the real VGG16 code runs up to the download.
  monkeypatch.setattr('keras.src.utils.file_utils.get_file', offline)
  with pytest.raises(errors.UserError) as raised:
    models.FCN8s(19, backbone_weights='imagenet', fc_channels=8)
  message = str(raised.value)
  assert '\n' not in message
  assert 'ImageNet VGG16 weights could not be loaded' in message
  assert '--config.model.backbone_weights=random' in message and 'path' in message


def test_local_weights_file_is_loaded_and_inputs_preprocessed(tmp_path):
  keras.utils.set_random_seed(3)
  vgg = keras.applications.VGG16(include_top=False, weights=None, input_shape=(32, 32, 3))
  path = tmp_path / 'vgg16_notop.weights.h5'
  vgg.save_weights(str(path))
  keras.utils.set_random_seed(4)
  net = _small_fcn(backbone_weights=str(path))
  saved = [layer for layer in vgg.layers if isinstance(layer, keras.layers.Conv2D)]
  assert [layer.name for layer in net.backbone] == [layer.name for layer in saved]
  for ours, theirs in zip(net.backbone, saved):
    for a, b in zip(ours.get_weights(), theirs.get_weights()):
      np.testing.assert_array_equal(a, b)
  # Trained weights read caffe-style input: [-1, 1] RGB → 0..255 BGR minus ImageNet means.
  images = _images((1, 8, 8, 3))
  np.testing.assert_allclose(
      net.preprocess(images).numpy(),
      keras.applications.vgg16.preprocess_input((images.numpy() + 1.0) * 127.5), atol=1e-4)
  assert net(images)[0].shape == (1, 8, 8, 5)


def test_random_backbone_reads_the_inputs_unchanged(small_fcn):
  images = _images((1, 8, 8, 3))
  np.testing.assert_array_equal(small_fcn.preprocess(images).numpy(), images.numpy())


@pytest.mark.parametrize('weights, match', [
    ('/no/such/vgg16.weights.h5', r"'/no/such/vgg16.weights.h5': no such weights file"),
    (None, 'expected imagenet, random or a path'),
])
def test_bad_backbone_weights_are_user_errors(weights, match):
  with pytest.raises(errors.UserError, match=match):
    models.FCN8s(3, backbone_weights=weights, fc_channels=8)


def test_unloadable_weights_file_is_a_user_error(tmp_path):
  path = tmp_path / 'not_vgg.weights.h5'
  dense = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
  dense.save_weights(str(path))
  with pytest.raises(errors.UserError, match='did not load') as raised:
    models.FCN8s(3, backbone_weights=str(path), fc_channels=8)
  assert '\n' not in str(raised.value)


def test_fcn8s_parameter_count_through_the_registry():
  net = models.build_classifier('fcn8s', 19, backbone_weights='random')
  assert isinstance(net, models.FCN8s) and net.name == 'fcn8s'
  logits, features = net(_images((1, 32, 40, 3)), training=False)
  assert logits.shape == (1, 32, 40, 19) and features.shape == (1, 1, 2, 4096)
  vgg16_convs = 14_714_688                    # keras.applications.VGG16(include_top=False)
  fc6 = 7 * 7 * 512 * 4096 + 4096
  fc7 = 4096 * 4096 + 4096
  scores = (4096 + 1) * 19 + (512 + 1) * 19 + (256 + 1) * 19  # score_fr, score_pool4, score_pool3
  assert net.count_params() == vgg16_convs + fc6 + fc7 + scores == 134_353_017  # FCN8s: ~134M.
  assert net.score_pool4.get_weights()[0].max() == 0  # The release's zero-initialised skips.


def test_drn26_parameter_count():
  net = models.DRN26(19, width=1.0)
  net(_images((1, 16, 16, 3)))
  trainable = sum(int(np.prod(v.shape)) for v in net.trainable_variables)
  # DRN-C-26: 21.1M with its 512 → 1000 classifier (Yu et al.), i.e. ~20.6M without it.
  assert 20.4e6 < trainable < 20.8e6
  assert trainable - net.scores.count_params() + (512 + 1) * 1000 == pytest.approx(21.1e6,
                                                                                  rel=0.01)


def test_registry_builds_segmentation_nets_and_digit_nets_unchanged():
  drn = models.build_classifier('drn26', 13, width=0.5)
  assert isinstance(drn, models.DRN26) and drn.width == 0.5 and drn.name == 'drn26'
  assert drn(_images((1, 24, 24, 3)))[0].shape == (1, 24, 24, 13)
  lenet = models.build_classifier('lenet', 10)
  assert isinstance(lenet, models.LeNet) and lenet.name == 'lenet'
  assert lenet(tf.zeros((1, 28, 28, 1)))[0].shape == (1, 10)
  assert set(models.CLASSIFIERS) == {'lenet', 'dtn', 'fcn8s', 'drn26'}


def test_registry_rejects_options_a_network_does_not_take():
  with pytest.raises(errors.UserError, match=r"'lenet' takes no option width"):
    models.build_classifier('lenet', 10, width=0.5)
  with pytest.raises(errors.UserError, match=r"'drn26', 'fcn8s'"):
    models.build_classifier('resnet', 19)


def test_fcn8s_dropout_only_in_training_and_features_feed_score_fr(small_fcn):
  images = _images((2, 64, 64, 3), seed=1)
  first, features = small_fcn(images, training=False)
  np.testing.assert_array_equal(small_fcn(images, training=False)[0].numpy(), first.numpy())
  assert not np.allclose(small_fcn(images, training=True)[0].numpy(), first.numpy())
  assert isinstance(small_fcn.fc6_dropout, models.GlobalBatchDropout)
  assert isinstance(_small_fcn(spatial_dropout=True).fc7_dropout,
                    models.GlobalBatchSpatialDropout2D)
  # features = fc7, the input of score_fr (the skips start at 0, so here logits = score_fr ↑).
  assert features.shape == (2, 2, 2, 16) and np.all(features.numpy() >= 0)
  scores = small_fcn.score_fr(features)
  expected = segmentation.upsample(segmentation.upsample(segmentation.upsample(
      scores, 2, (4, 4)), 2, (8, 8)), 8, (64, 64))
  np.testing.assert_allclose(first.numpy(), expected.numpy(), atol=1e-5)


def test_drn26_batch_norm_updates_only_in_training(small_drn):
  images = _images((2, 16, 16, 3), seed=2)
  before = small_drn.stem_norm.moving_mean.numpy().copy()
  small_drn(images, training=False)
  np.testing.assert_array_equal(small_drn.stem_norm.moving_mean.numpy(), before)
  small_drn(images, training=True)
  assert not np.allclose(small_drn.stem_norm.moving_mean.numpy(), before)
  assert small_drn.stem_norm.synchronized


@pytest.mark.parametrize('which', ['fcn8s', 'drn26'])
def test_tf_function_matches_eager(which, small_fcn, small_drn):
  net = small_fcn if which == 'fcn8s' else small_drn
  images = _images((1, 37, 53, 3), seed=3)
  traced = tf.function(lambda x: net(x, training=False),
                       input_signature=[tf.TensorSpec((None, None, None, 3))])
  eager = net(images, training=False)
  for got, want in zip(traced(images), eager):
    assert got.shape == want.shape
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-4)


@pytest.mark.parametrize('which', ['fcn8s', 'drn26'])
def test_checkpoint_restores_outputs(which, tmp_path):
  def build(seed):
    keras.utils.set_random_seed(seed)
    net = _small_fcn() if which == 'fcn8s' else models.DRN26(5, width=0.25)
    net(images, training=True)  # Creates the variables and moves DRN's batch-norm statistics.
    if which == 'fcn8s':  # Give the zero-initialised skips something to restore.
      net.score_pool4.kernel.assign(tf.random.normal(net.score_pool4.kernel.shape, seed=seed))
    return net

  images = _images((1, 24, 32, 3), seed=4)
  net = build(1)
  path = tf.train.Checkpoint(classifier=net).write(str(tmp_path / 'ckpt'))
  saved = [n for n, _ in tf.train.list_variables(path) if n.startswith('classifier/')]
  assert len(saved) == len(net.weights)
  fresh = build(2)
  assert not np.allclose(fresh(images)[0].numpy(), net(images)[0].numpy())
  tf.train.Checkpoint(classifier=fresh).read(path).assert_existing_objects_matched()
  np.testing.assert_allclose(fresh(images)[0].numpy(), net(images)[0].numpy(), atol=1e-5)


def test_score_map_discriminator_is_19_512_256_2_per_position():
  discriminator = models.build_score_map_discriminator()
  maps = tf.random.stateless_normal((2, 9, 11, 19), seed=(5, 0))
  scores = discriminator(maps)
  assert scores.shape == (2, 9, 11, 2) and scores.dtype == tf.float32
  assert discriminator.count_params() == (19 * 512 + 512) + (512 * 256 + 256) + (256 * 2 + 2)
  # 1×1 convs: one decision per position, independent of its neighbours.
  np.testing.assert_allclose(discriminator(maps[:, 4:5, 7:8]).numpy(), scores[:, 4:5, 7:8],
                             atol=1e-5)


def test_score_map_discriminator_drops_whole_channels_only_in_training():
  discriminator = models.ScoreMapFeatureDiscriminator(hidden=(32, 16), dropout=0.5)
  maps = tf.random.stateless_normal((3, 5, 6, 4), seed=(6, 0))
  inference = discriminator(maps).numpy()
  np.testing.assert_array_equal(discriminator(maps).numpy(), inference)
  assert not np.allclose(discriminator(maps, training=True).numpy(), inference)
  assert all(isinstance(d, models.GlobalBatchSpatialDropout2D) for d in discriminator.dropouts)
  hidden = tf.ones((3, 5, 6, 32))
  kept = discriminator.dropouts[0](hidden, training=True).numpy() != 0
  # One keep / drop decision per image and channel, the same at every position.
  assert np.all(kept == kept[:, :1, :1, :]) and 0 < kept.mean() < 1
  assert models.ScoreMapFeatureDiscriminator(dropout=0.0).dropouts == (None, None)


# Two logical CPUs must be configured before TensorFlow initialises, hence a fresh interpreter.
_DISTRIBUTED_SCRIPT = textwrap.dedent('''
  import tensorflow as tf
  cpu = tf.config.list_physical_devices('CPU')[0]
  tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
  import keras
  from cycada_tf import models

  strategy = tf.distribute.MirroredStrategy(['/cpu:0', '/cpu:1'])
  with strategy.scope():
    # DRN-26 trains on two replicas end to end in tests/test_segmentation_replicas.py.
    nets = [models.FCN8s(5, backbone_weights='random', fc_channels=8)]
    discriminator = models.build_score_map_discriminator(hidden=(8, 4))
    for net in nets:
      net(tf.zeros((1, 37, 53, 3)), training=False)
    discriminator(tf.zeros((1, 37, 53, 5)))
    variables = [v for n in nets + [discriminator] for v in n.trainable_variables]
    optimizer = keras.optimizers.SGD(1e-3)
    optimizer.build(variables)

  def replica_step(images):
    with tf.GradientTape() as tape:
      total = 0.0
      for net in nets:
        logits, features = net(images, training=True)
        scores = discriminator(logits, training=True)
        total += tf.reduce_mean(tf.square(logits)) + tf.reduce_mean(scores)
        total += tf.reduce_mean(features)
    optimizer.apply_gradients(zip(tape.gradient(total, variables), variables))
    return total

  @tf.function
  def step(images):
    return strategy.reduce('SUM', strategy.run(replica_step, args=(images,)), axis=None)

  images = tf.random.uniform((4, 37, 53, 3), -1, 1)
  dataset = strategy.experimental_distribute_dataset(
      tf.data.Dataset.from_tensors(images).unbatch().batch(4, drop_remainder=True).repeat(2))
  for batch in dataset:
    value = float(step(batch))
    assert value == value, 'NaN'
  print('DISTRIBUTED_OK')
''')


@pytest.mark.slow
def test_segmentation_networks_train_under_two_replica_mirrored_strategy():
  conftest.run_python(_DISTRIBUTED_SCRIPT, expect='DISTRIBUTED_OK')
