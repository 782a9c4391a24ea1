"""The image pool: fills first, then swaps about half the batch with stored fakes."""

import numpy as np
import tensorflow as tf

from cycada_tf.image_pool import ImagePool


def _batch(value, n=4):
  return tf.fill((n, 2, 2, 1), float(value))


def test_pool_returns_new_images_while_filling():
  pool = ImagePool(pool_size=8, image_shape=(2, 2, 1), seed=0)
  np.testing.assert_array_equal(pool.query(_batch(1.0)).numpy(), _batch(1.0).numpy())
  np.testing.assert_array_equal(pool.query(_batch(2.0)).numpy(), _batch(2.0).numpy())
  assert int(pool.num_stored.numpy()) == 8
  stored = sorted(pool.images.numpy()[:, 0, 0, 0].tolist())
  assert stored == [1.0] * 4 + [2.0] * 4


def test_full_pool_swaps_about_half_with_history():
  pool = ImagePool(pool_size=50, image_shape=(2, 2, 1), seed=3)
  pool.query(tf.zeros((50, 2, 2, 1)))  # fill with zeros
  out = pool.query(tf.ones((1000, 2, 2, 1))).numpy()[:, 0, 0, 0]
  old = np.mean(out == 0.0)
  # Each image is swapped with probability 1/2; a swapped-in 1 can come back later, so the
  # fraction of old zeros returned is at most 1/2 and clearly above 0.
  assert 0.02 < old <= 0.55
  assert set(np.unique(out)) <= {0.0, 1.0}
  # Everything returned is either the new image or something that was stored.
  assert pool.num_stored.numpy() == 50


def test_pool_is_deterministic_given_seed():
  outputs = []
  for _ in range(2):
    pool = ImagePool(pool_size=4, image_shape=(2, 2, 1), seed=7)
    results = [pool.query(_batch(i)).numpy() for i in range(5)]
    outputs.append(np.stack(results))
  np.testing.assert_array_equal(outputs[0], outputs[1])


def test_zero_sized_pool_is_identity():
  pool = ImagePool(pool_size=0, image_shape=(2, 2, 1))
  np.testing.assert_array_equal(pool.query(_batch(5.0)).numpy(), _batch(5.0).numpy())


def test_pool_is_checkpointed(tmp_path):
  pool = ImagePool(pool_size=4, image_shape=(2, 2, 1), seed=1)
  pool.query(_batch(3.0))
  path = tf.train.Checkpoint(pool=pool).save(str(tmp_path / 'ckpt'))
  restored = ImagePool(pool_size=4, image_shape=(2, 2, 1), seed=1)
  tf.train.Checkpoint(pool=restored).restore(path).assert_existing_objects_matched()
  np.testing.assert_array_equal(restored.images.numpy(), pool.images.numpy())
  assert int(restored.num_stored.numpy()) == 4
