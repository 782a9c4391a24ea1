"""`ops.reflect_pad_2d`: the same values and gradients as TF's MirrorPad, by a faster gradient."""

import numpy as np
import pytest
import tensorflow as tf

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


def test_zero_pad_is_identity_and_too_small_maps_are_rejected():
  images = tf.zeros((1, 4, 4, 1))
  assert ops.reflect_pad_2d(images, 0) is images
  with pytest.raises(ValueError, match='height and width > 3'):
    ops.reflect_pad_2d(tf.zeros((1, 3, 5, 1)), 3)
