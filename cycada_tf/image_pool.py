"""The history of generated images that CycleGAN's discriminators train on (Shrivastava et al.).

Showing a discriminator a mix of the current fakes and older ones (a pool of 50) damps the
oscillation between generator and discriminator. Semantics follow CycleGAN's `ImagePool`: while
the pool is filling, each new fake is stored and returned; once full, each fake is, with
probability 1/2, returned as is, or else swapped with a random stored fake, which is returned.

Distribution: the pool lives in replica-local (`ON_READ`) variables, so each replica keeps its own
history of the fakes it generated (the global pool of `pool_size` is split evenly over replicas).
Randomness is stateless, seeded by (seed, query count, replica id), so runs are reproducible and
replicas never contend for a shared random state. A checkpoint stores replica 0's pool.
"""

import tensorflow as tf


def _local_variable(initial_value, name):
  return tf.Variable(initial_value, trainable=False, name=name,
                     synchronization=tf.VariableSynchronization.ON_READ,
                     aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)


class ImagePool(tf.Module):
  """A per-replica pool of past fakes; create it inside `strategy.scope()`."""

  def __init__(self, pool_size, image_shape, seed=0, num_replicas=1, name=None):
    super().__init__(name=name)
    self.capacity = max(int(pool_size) // max(int(num_replicas), 1), 0) if pool_size else 0
    self.seed = int(seed)
    self.images = _local_variable(
        tf.zeros((max(self.capacity, 1),) + tuple(image_shape)), 'images')
    self.num_stored = _local_variable(tf.constant(0, tf.int32), 'num_stored')
    self.num_queries = _local_variable(tf.constant(0, tf.int64), 'num_queries')

  def query(self, images):
    """Returns a batch the same shape as `images`, mixing them with stored past fakes."""
    if self.capacity == 0:
      return images
    images = tf.stop_gradient(images)
    replica_context = tf.distribute.get_replica_context()
    replica_id = replica_context.replica_id_in_sync_group if replica_context else 0
    seed = tf.stack([tf.cast(self.seed, tf.int64) * 1009 + tf.cast(replica_id, tf.int64),
                     self.num_queries.read_value()])
    self.num_queries.assign_add(1)
    batch = tf.shape(images)[0]
    coins = tf.random.stateless_uniform([batch], seed=seed)
    slots = tf.random.stateless_uniform([batch], seed=seed + [0, 1 << 32], minval=0,
                                        maxval=self.capacity, dtype=tf.int32)
    stored = self.images.read_value()
    num_stored = self.num_stored.read_value()
    outputs = tf.TensorArray(images.dtype, size=batch, element_shape=images.shape[1:])
    for i in tf.range(batch):
      image = images[i]
      if num_stored < self.capacity:
        stored = tf.tensor_scatter_nd_update(stored, [[num_stored]], image[tf.newaxis])
        num_stored += 1
        returned = image
      elif coins[i] > 0.5:
        returned = stored[slots[i]]
        stored = tf.tensor_scatter_nd_update(stored, [[slots[i]]], image[tf.newaxis])
      else:
        returned = image
      outputs = outputs.write(i, returned)
    self.images.assign(stored)
    self.num_stored.assign(num_stored)
    return outputs.stack()
