"""The history of generated images that CycleGAN's discriminators train on (Shrivastava et al.).

Showing a discriminator a mix of the current fakes and older ones (a pool of 50) damps the
oscillation between generator and discriminator. Semantics follow CycleGAN's `ImagePool`: while
the pool is filling, each new fake is stored and returned; once full, each fake is, with
probability 1/2, returned as is, or else swapped with a random stored fake, which is returned.

Distribution: the pool is global, as if one device had generated the whole batch, so training
does not depend on the replica count (a 2-GPU run sees the same pool as a 1-GPU run with the same
global batch). Each replica gathers every replica's fakes (`all_gather`, in replica order, which
is the order of the global batch), runs the same pool update on the global batch with the same
stateless random numbers (seeded by (seed, query count), never by replica id), keeps an identical
copy of the pool in replica-local (`ON_READ`) variables, and returns its own slice. The price is
one all-gather of the fakes per query and a full pool per replica; a checkpoint stores replica
0's copy, which equals every other.
"""

import tensorflow as tf


def _local_variable(initial_value, name):
  return tf.Variable(initial_value, trainable=False, name=name,
                     synchronization=tf.VariableSynchronization.ON_READ,
                     aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)


class ImagePool(tf.Module):
  """A pool of past fakes shared by all replicas; create it inside `strategy.scope()`."""

  def __init__(self, pool_size, image_shape, seed=0, name=None):
    """A global pool: `pool_size` fakes whatever the replica count."""
    super().__init__(name=name)
    self.capacity = max(int(pool_size), 0) if pool_size else 0
    self.seed = int(seed)
    self.images = _local_variable(
        tf.zeros((max(self.capacity, 1),) + tuple(image_shape)), 'images')
    self.num_stored = _local_variable(tf.constant(0, tf.int32), 'num_stored')
    self.num_queries = _local_variable(tf.constant(0, tf.int64), 'num_queries')

  def query(self, images):
    """Returns a batch the same shape as `images`, mixing them with stored past fakes.

    In replica context `images` is this replica's share of the global batch (every replica's
    share has the same size, as with `drop_remainder=True`).
    """
    if self.capacity == 0:
      return images
    images = tf.stop_gradient(images)
    replica_context = tf.distribute.get_replica_context()
    num_replicas = replica_context.num_replicas_in_sync if replica_context else 1
    if num_replicas == 1:
      return self._query_global(images)
    local_batch = tf.shape(images)[0]
    returned = self._query_global(replica_context.all_gather(images, axis=0))
    start = tf.cast(replica_context.replica_id_in_sync_group, tf.int32) * local_batch
    return returned[start:start + local_batch]

  def _query_global(self, images):
    """CycleGAN's pool update on the whole global batch; identical on every replica."""
    seed = tf.stack([tf.cast(self.seed, tf.int64) * 1009, self.num_queries.read_value()])
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
    # The loop loses the static batch size; restore it so that the discriminator's graph keeps
    # full shapes (XLA and the benchmark's FLOP count need them).
    return tf.ensure_shape(outputs.stack(), images.shape)
