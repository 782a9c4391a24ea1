"""`ops`: the same values and gradients as TF's (or Keras') own ops, by faster kernels."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from cycada_tf import kernels
from cycada_tf import ops


def _value_and_grad(pad_fn, images, weights):
  with tf.GradientTape() as tape:
    tape.watch(images)
    padded = pad_fn(images)
    loss = tf.reduce_sum(tf.cast(padded, tf.float32) * weights)
  return padded, tape.gradient(loss, images)


@pytest.mark.parametrize('shape,pad', [((2, 3, 3, 2), 1),     # bands overlap: n - 1 - pad <= pad
                                       ((2, 4, 5, 3), 2),     # overlap on one axis only
                                       ((3, 8, 8, 4), 1),     # a residual block's pad
                                       ((2, 10, 12, 3), 3)])  # the 7×7 stem's pad
def test_values_and_gradients_match_mirror_pad(shape, pad):
  rng = np.random.default_rng(0)
  images = tf.constant(rng.normal(size=shape), tf.float32)
  padded_shape = (shape[0], shape[1] + 2 * pad, shape[2] + 2 * pad, shape[3])
  # Distinct weights per padded position, so every border row's gradient lands somewhere visible.
  weights = tf.constant(rng.normal(size=padded_shape), tf.float32)
  reference = lambda x: tf.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]], mode='REFLECT')
  want_value, want_grad = _value_and_grad(reference, images, weights)
  got_value, got_grad = _value_and_grad(lambda x: ops.reflect_pad_2d(x, pad), images, weights)
  np.testing.assert_array_equal(got_value.numpy(), want_value.numpy())
  np.testing.assert_allclose(got_grad.numpy(), want_grad.numpy(), rtol=1e-6, atol=1e-6)


def test_works_compiled_and_in_bfloat16():
  images = tf.random.stateless_uniform((2, 6, 6, 2), seed=(1, 2), dtype=tf.float32)
  weights = tf.ones((2, 8, 8, 2))

  @tf.function(jit_compile=True)
  def compiled(x):
    return _value_and_grad(lambda y: ops.reflect_pad_2d(y, 1), x, weights)

  value, grad = compiled(images)
  assert value.shape == (2, 8, 8, 2)
  # With all-ones weights, each input pixel's gradient counts its copies in the padded map.
  assert float(tf.reduce_sum(grad)) == pytest.approx(2 * 8 * 8 * 2)
  half = ops.reflect_pad_2d(tf.cast(images, tf.bfloat16), 1)
  assert half.dtype == tf.bfloat16 and half.shape == (2, 8, 8, 2)
  mirrored = tf.pad(tf.cast(images, tf.bfloat16), [[0, 0], [1, 1], [1, 1], [0, 0]], mode='REFLECT')
  np.testing.assert_array_equal(tf.cast(half, tf.float32).numpy(),
                                tf.cast(mirrored, tf.float32).numpy())


def test_zero_pad_is_identity_and_too_small_maps_are_rejected():
  images = tf.zeros((1, 4, 4, 1))
  assert ops.reflect_pad_2d(images, 0) is images
  with pytest.raises(ValueError, match='height and width > 3'):
    ops.reflect_pad_2d(tf.zeros((1, 3, 5, 1)), 3)


def _instance_norm_value_and_grads(norm_fn, x, gamma, beta, weights):
  with tf.GradientTape() as tape:
    tape.watch([x, gamma, beta])
    y = norm_fn(x, gamma, beta)
    loss = tf.reduce_sum(tf.cast(y, tf.float32) * weights)
  return [y] + tape.gradient(loss, [x, gamma, beta])


@pytest.mark.parametrize('shape', [(4, 8, 8, 3), (1, 5, 7, 16), (3, 2, 2, 1)])
def test_instance_norm_matches_keras_group_norm(shape):
  rng = np.random.default_rng(1)
  x = tf.constant(rng.normal(2.0, 3.0, size=shape), tf.float32)
  gamma = tf.constant(rng.normal(size=shape[-1:]), tf.float32)
  beta = tf.constant(rng.normal(size=shape[-1:]), tf.float32)
  weights = tf.constant(rng.normal(size=shape), tf.float32)
  keras_norm = keras.layers.GroupNormalization(groups=-1, epsilon=1e-5)
  keras_norm.build(shape)

  def reference(x, gamma, beta):
    keras_norm.gamma.assign(gamma)
    keras_norm.beta.assign(beta)
    return keras_norm(x)

  # Keras' gamma and beta are variables: their gradients come from a second tape.
  want = _instance_norm_value_and_grads(reference, x, gamma, beta, weights)
  with tf.GradientTape() as tape:
    loss = tf.reduce_sum(keras_norm(x) * weights)
  want[2:] = tape.gradient(loss, [keras_norm.gamma, keras_norm.beta])
  got = _instance_norm_value_and_grads(
      lambda *a: ops.instance_norm(*a, epsilon=1e-5), x, gamma, beta, weights)
  for name, g, w in zip(('value', 'd/dx', 'd/dgamma', 'd/dbeta'), got, want):
    np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-4, atol=1e-4, err_msg=name)


def test_instance_norm_in_bfloat16_keeps_the_dtype_and_normalises_per_image_channel():
  x = tf.random.stateless_normal((3, 6, 6, 4), seed=(3, 4), mean=5.0, stddev=2.0)
  y = ops.instance_norm(tf.cast(x, tf.bfloat16), tf.ones(4), tf.zeros(4), 1e-5)
  assert y.dtype == tf.bfloat16
  mean, variance = tf.nn.moments(tf.cast(y, tf.float32), axes=[1, 2])
  np.testing.assert_allclose(mean.numpy(), 0.0, atol=0.02)
  np.testing.assert_allclose(variance.numpy(), 1.0, atol=0.02)


def _check_conv_against_tf(ours, native, x, kernel, weights, swapped):
  """`ours` equals TF's `native` conv in float32 (values and gradients), is as close as TF's own
  in bfloat16, and swaps the bfloat16 filter gradient exactly when `swapped` where swapping is
  on (`filter_gradient='swapped'`, the default of CPUs without AMX); with 'native' it never
  swaps, whatever the CPU."""
  for choice in ('swapped', 'native'):
    with kernels.scope('cpu_tuned', filter_gradient=choice):
      _check_conv_once(ours, native, x, kernel, weights, swapped and choice == 'swapped')


def _check_conv_once(ours, native, x, kernel, weights, swapped):
  def value_and_grads(conv, dtype):
    with tf.GradientTape() as tape:
      tape.watch([x, kernel])
      y = conv(tf.cast(x, dtype), tf.cast(kernel, dtype))
      loss = tf.reduce_sum(tf.cast(y, tf.float32) * weights)
    return [tf.cast(y, tf.float32)] + tape.gradient(loss, [x, kernel])

  exact = value_and_grads(native, tf.float32)
  # float32: TensorFlow's op itself.
  for got, want in zip(value_and_grads(ours, tf.float32), exact):
    np.testing.assert_array_equal(got.numpy(), want.numpy())
  # bfloat16: as close to the float32 result as TensorFlow's own bfloat16 gradient is.
  tf_bf16 = value_and_grads(native, tf.bfloat16)
  ours_bf16 = value_and_grads(ours, tf.bfloat16)
  for name, got, theirs, want in zip(('value', 'd/dx', 'd/dkernel'), ours_bf16, tf_bf16, exact):
    scale = float(tf.reduce_max(tf.abs(want)))
    error = float(tf.reduce_max(tf.abs(got - want))) / scale
    tf_error = float(tf.reduce_max(tf.abs(theirs - want))) / scale
    assert error <= max(2 * tf_error, 1e-2), (name, error, tf_error)
  graph = tf.function(lambda: value_and_grads(ours, tf.bfloat16)
                      ).get_concrete_function().graph.as_graph_def()
  op_types = {node.op for f in graph.library.function for node in f.node_def} | {
      node.op for node in graph.node}
  assert ('Conv2DBackpropFilter' not in op_types) == swapped, sorted(op_types)


@pytest.mark.parametrize('shape,swapped', [((4, 10, 10, 128), True),   # a residual block's conv
                                           ((2, 20, 20, 128), False),  # map too large
                                           ((4, 10, 10, 16), False)])  # too few channels
def test_valid_conv2d_gradients_match_tf_in_bfloat16(shape, swapped):
  rng = np.random.default_rng(2)
  x = tf.constant(rng.normal(size=shape), tf.float32)
  kernel = tf.constant(rng.normal(size=(3, 3, shape[-1], 8)) / 30, tf.float32)
  weights = tf.constant(rng.normal(size=(shape[0], shape[1] - 2, shape[2] - 2, 8)), tf.float32)
  native = lambda x, k: tf.nn.conv2d(x, k, 1, 'VALID')
  _check_conv_against_tf(lambda x, k: ops.conv2d(x, k, 1, 'VALID'), native, x, kernel, weights,
                         swapped)


@pytest.mark.parametrize('dtype', [tf.float32, tf.bfloat16])
def test_leaky_relu_matches_tf_values_and_gradients(dtype):
  x = tf.constant([[-2.0, -0.5, 0.0, 0.0, 0.25, 3.0]], dtype)  # zeros: the kink itself
  upstream = tf.constant([[1.0, -2.0, 3.0, -4.0, 5.0, -6.0]], dtype)

  def value_and_grad(fn):
    with tf.GradientTape() as tape:
      tape.watch(x)
      y = fn(x)
    return y, tape.gradient(y, x, output_gradients=upstream)

  y, dx = value_and_grad(lambda t: ops.leaky_relu(t, 0.2))
  y_ref, dx_ref = value_and_grad(lambda t: tf.nn.leaky_relu(t, alpha=0.2))
  assert y.dtype == dtype and dx.dtype == dtype
  np.testing.assert_array_equal(tf.cast(y, tf.float32), tf.cast(y_ref, tf.float32))
  np.testing.assert_array_equal(tf.cast(dx, tf.float32), tf.cast(dx_ref, tf.float32))


def test_leaky_relu_gradient_reads_the_output_not_the_input():
  """The point of `ops.leaky_relu`: the pre-activation has one consumer, so Grappler can fuse it."""
  @tf.function
  def step(x):
    with tf.GradientTape() as tape:
      tape.watch(x)
      pre = tf.identity(x, name='pre_activation')
      y = ops.leaky_relu(pre, 0.2)
    return tape.gradient(y, x)

  graph = step.get_concrete_function(tf.TensorSpec([4], tf.float32)).graph
  grads = [op for op in graph.get_operations() if op.type == 'LeakyReluGrad']
  assert grads and all(op.inputs[1].op.type == 'LeakyRelu' for op in grads)
  pre = graph.get_operation_by_name('pre_activation')
  # Besides the activation only custom_gradient's bookkeeping IdentityN, which Grappler prunes.
  consumers = [c.type for c in pre.outputs[0].consumers() if c.type != 'IdentityN']
  assert consumers == ['LeakyRelu']


def test_leaky_relu_needs_a_positive_slope():
  with pytest.raises(ValueError, match='positive slope'):
    ops.leaky_relu(tf.ones([2]), 0.0)


@pytest.mark.parametrize('shape,kernel_size,strides,padding,swapped', [
    ((4, 16, 16, 64), 4, 2, 'SAME', True),    # PatchGAN's second conv: padded to 18×18
    ((4, 4, 4, 128), 4, 1, 'SAME', True),     # PatchGAN's stride-1 conv: padded to 7×7
    ((4, 17, 17, 64), 4, 2, 'VALID', True),   # strided 'valid': the last row is never read
    ((4, 16, 16, 3), 4, 2, 'SAME', False),    # too few channels (PatchGAN's first conv)
    ((2, 32, 32, 64), 4, 2, 'SAME', False)])  # map too large
def test_strided_conv2d_gradients_match_tf_in_bfloat16(shape, kernel_size, strides, padding,
                                                        swapped):
  rng = np.random.default_rng(3)
  x = tf.constant(rng.normal(size=shape), tf.float32)
  kernel = tf.constant(rng.normal(size=(kernel_size, kernel_size, shape[-1], 8)) / 30,
                       tf.float32)
  native = lambda x, k: tf.nn.conv2d(x, k, strides, padding)
  weights = tf.constant(rng.normal(size=native(x, kernel).shape), tf.float32)
  _check_conv_against_tf(lambda x, k: ops.conv2d(x, k, strides, padding), native, x, kernel,
                         weights, swapped)


@pytest.mark.parametrize('shape,out_channels,strides,padding,swapped', [
    ((4, 8, 8, 32), 128, 2, 'SAME', True),    # ResNet-9's first decoder stage: 17×17 padded dy
    ((4, 7, 7, 32), 64, 2, 'VALID', True),    # 'valid': 15×15 output
    ((4, 8, 8, 32), 128, 1, 'SAME', True),    # stride 1: 10×10 padded dy
    ((4, 8, 8, 32), 16, 2, 'SAME', False),    # too few output channels
    ((2, 16, 16, 32), 64, 2, 'SAME', False)])  # output too large (the second decoder stage)
def test_conv2d_transpose_matches_keras_in_float32_and_bfloat16(shape, out_channels, strides,
                                                                 padding, swapped):
  rng = np.random.default_rng(4)
  x = tf.constant(rng.normal(size=shape), tf.float32)
  kernel = tf.constant(rng.normal(size=(3, 3, out_channels, shape[-1])) / 30, tf.float32)
  native = lambda x, k: keras.ops.conv_transpose(x, k, strides, padding.lower())
  weights = tf.constant(rng.normal(size=native(x, kernel).shape), tf.float32)
  _check_conv_against_tf(lambda x, k: ops.conv2d_transpose(x, k, strides, padding), native, x,
                         kernel, weights, swapped)


def test_conv2d_transpose_with_an_unknown_batch_and_size():
  kernel = tf.random.normal([3, 3, 8, 4])
  compiled = tf.function(lambda x: ops.conv2d_transpose(x, kernel, 2, 'SAME'),
                         input_signature=[tf.TensorSpec([None, None, None, 4])])
  x = tf.random.normal([3, 5, 6, 4])
  np.testing.assert_allclose(compiled(x).numpy(),
                             keras.ops.conv_transpose(x, kernel, 2, 'same').numpy(), atol=1e-5)


@pytest.mark.parametrize('dtype', [tf.float32, tf.bfloat16])
@pytest.mark.parametrize('perm', [[1, 2, 0, 3], [3, 1, 2, 0], [2, 0, 1, 3]])
def test_transpose_equals_tf_transpose_with_gradients(dtype, perm):
  x = tf.cast(tf.random.stateless_normal([3, 4, 5, 6], seed=(5, 6)), dtype)
  weights = tf.random.stateless_normal(tf.transpose(x, perm).shape, seed=(7, 8))

  @tf.function
  def value_and_grad(fn):
    with tf.GradientTape() as tape:
      tape.watch(x)
      y = fn(x, perm)
      loss = tf.reduce_sum(tf.cast(y, tf.float32) * weights)
    return y, tape.gradient(loss, x)

  got, want = value_and_grad(ops.transpose), value_and_grad(tf.transpose)
  for mine, theirs in zip(got, want):
    assert mine.dtype == theirs.dtype == dtype
    np.testing.assert_array_equal(tf.cast(mine, tf.float32).numpy(),
                                  tf.cast(theirs, tf.float32).numpy())


def test_transpose_moves_bfloat16_as_uint16_bits():
  graph = tf.function(lambda x: ops.transpose(x, [1, 0])).get_concrete_function(
      tf.TensorSpec([2, 3], tf.bfloat16)).graph.as_graph_def()
  transposes = [node for node in graph.node if node.op == 'Transpose']
  assert transposes and all(node.attr['T'].type == tf.uint16.as_datatype_enum
                            for node in transposes)
