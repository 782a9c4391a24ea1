"""Dropout whose masks do not depend on how many replicas share the global batch.

Why not `keras.layers.Dropout`: under `tf.distribute.MirroredStrategy` (or
`MultiWorkerMirroredStrategy`) a Keras dropout layer's `SeedGenerator` state is a mirrored variable
with `aggregation='none'`. It starts with the same value on every replica and every replica
advances its own copy once per call, so all copies stay equal, and every replica draws its mask
from the same seed for *its own* share of the batch. The result: replica 1's examples get exactly
the masks replica 0's examples get (the masks are correlated across replicas), and none of them is
the mask the same example would get in a 1-replica run of the same global batch. Training then
depends on the replica count, and a 1-vs-N-replica comparison can only be made with dropout off.

What these layers do instead: the seed is still the layer's own `SeedGenerator` state, identical on
every replica (see above), but each replica draws the uniform noise for the whole *global* batch,
`num_replicas_in_sync` per-replica batches stacked in replica order, and keeps only its own slot:
replica r of n with local batch b uses rows [r·b, (r+1)·b) of the global mask. With one input
pipeline MirroredStrategy deals consecutive per-replica batches to replicas 0, 1, ..., so the global
batch of an n-replica step is, row for row, the batch of the 1-replica step, and every example is
multiplied by the same mask entries whatever n is. With several workers the rows of the global mask
are still distinct per replica (replica ids are global), so masks are independent across replicas.

Everything else is Keras' dropout: identity unless `training`, inverted scaling (kept units times
1 / (1 - rate)), a unit is kept where a uniform draw in [0, 1) is >= rate, `noise_shape` (with
None for "as the input") and the spatial variant that drops whole channels, the same
constructor arguments, `get_config` and seed state (which, as in Keras, is not a weight and is not
checkpointed). The noise never depends on the compute dtype, so bfloat16 compute does not coarsen
the keep probability.

How the noise is drawn: on the `cpu_tuned` kernel path only (`config.train.kernels`, see
cycada_tf/kernels.py), rates that are multiples of 1/256 (0.5, 0.25, ...; every rate CyCADA's
networks use is 0.5) draw uniform bytes, four from each 32-bit word of TensorFlow's counter-based
stateless generator, and keep a unit where its byte is >= rate·256, which is exact. Random-number
generation is what dominates a dropout's cost on CPU, and the release's ResNet generators apply 36
dropouts per pixel-stage step. Bytes need a quarter of the generator's work, which makes a mask
clearly cheaper to draw (timed by `python -m train.bench_ops`; see docs/performance.md). On the
`stock` path, and for other rates, masks are float32 uniforms kept where >= rate, exactly as
`keras.layers.Dropout` draws them, and then, in float32 on one replica, the mask equals Keras' for
the same seed state. Either way the generator's first k values do not depend on how many are
drawn, which is what makes a replica's slot of the global draw equal the 1-replica rows.

Cost: each replica draws num_replicas × its own mask's worth of random numbers (with one replica,
just its own). The row slot assumes every replica holds an
equal share of the global batch, as training steps do (`drop_remainder=True`); a smaller final
batch would still get correctly distributed masks, just not the 1-replica ones.
"""

import keras
import tensorflow as tf

from cycada_tf import kernels


def replica_slot():
  """(replica index, number of replicas) of the current replica context.

  Outside any strategy (the default replica context) and in cross-replica context, where a layer
  sees the whole batch, that is (0, 1). The index may be a scalar int32 tensor.
  """
  context = tf.distribute.get_replica_context()
  if context is None:  # Cross-replica context: the caller holds the whole batch.
    return 0, 1
  return context.replica_id_in_sync_group, context.num_replicas_in_sync


def global_batch_dropout(inputs, rate, seed, noise_shape=None):
  """Inverted dropout of this replica's `inputs` with its slot of a global-batch mask.

  Args:
    inputs: a float tensor, this replica's share of the global batch along axis 0.
    rate: fraction of units to drop, in [0, 1].
    seed: a `keras.random.SeedGenerator` (or anything `keras.random.uniform` accepts) whose value
      is the same on every replica.
    noise_shape: the mask's shape, broadcastable to `inputs`, as in `keras.layers.Dropout`: None
      entries (or None for all) take `inputs`' size. The first entry must be None (one mask row
      per example, drawn for the global batch and sliced) or 1 (one mask for the whole batch,
      the same on every replica).

  Returns:
    `inputs` with dropped units set to 0 and kept ones scaled by 1 / (1 - rate).
  """
  if rate >= 1:
    return keras.ops.zeros_like(inputs)
  shape = keras.ops.shape(inputs)
  noise_shape = (None,) * len(shape) if noise_shape is None else tuple(noise_shape)
  _check_batch_entry(noise_shape)
  shared = noise_shape[0] == 1
  noise_shape = tuple(shape[i] if size is None else size for i, size in enumerate(noise_shape))
  replica, num_replicas = replica_slot()
  if shared or num_replicas == 1:
    # One mask for this replica's rows (or, if shared, for every example, replicas included).
    keep = keep_mask(noise_shape, rate, seed)
  else:
    keep = keep_mask((num_replicas,) + noise_shape, rate, seed)
    keep = tf.gather(keep, replica)  # Rows [replica·b, (replica + 1)·b) of the global mask.
  scaled = inputs * keras.ops.cast(1.0 / (1.0 - rate), inputs.dtype)
  return keras.ops.where(keep, scaled, keras.ops.zeros((), inputs.dtype))


# Dropout rates that are whole multiples of 1 / BYTE_LEVELS are drawn as bytes (see the module
# docstring).
BYTE_LEVELS = 256


def keep_mask(shape, rate, seed):
  """Boolean mask of `shape` (ints or scalar tensors): each entry is True with probability 1 - rate.

  Entries are independent draws from `seed`, a `keras.random.SeedGenerator` (advanced once) or
  anything `keras.random.uniform` accepts. On the `cpu_tuned` kernel path (`cycada_tf.kernels`),
  with a SeedGenerator, rates that are multiples of 1/256 are drawn as bytes (see the module
  docstring); otherwise as float32 uniforms, as Keras does.
  """
  threshold = rate * BYTE_LEVELS
  if (threshold != int(threshold) or not isinstance(seed, keras.random.SeedGenerator)
      or not kernels.cpu_tuned()):
    return keras.random.uniform(shape, dtype='float32', seed=seed) >= rate
  mask_shape = tf.stack([tf.cast(d, tf.int32) for d in shape])
  size = tf.reduce_prod(mask_shape)
  seed_value = seed.next()
  # As Keras does for its stateless draws: a seed the int32 stateless kernels accept.
  seed_value = tf.cast(tf.math.floormod(seed_value, tf.int32.max - 1), tf.int32)
  words = tf.random.stateless_uniform(tf.reshape((size + 3) // 4, [1]), seed=seed_value,
                                      minval=None, maxval=None, dtype=tf.uint32)
  random_bytes = tf.reshape(tf.bitcast(words, tf.uint8), [-1])[:size]
  return tf.reshape(random_bytes >= int(threshold), mask_shape)


def _check_batch_entry(noise_shape):
  if noise_shape[0] is not None and not (isinstance(noise_shape[0], int) and noise_shape[0] == 1):
    raise ValueError(
        f'noise_shape[0] must be None (one mask row per example) or 1 (one mask for the whole '
        f'batch), not {noise_shape[0]}: a fixed batch size differs with the replica count; got '
        f'noise_shape={noise_shape}')


class _GlobalBatchMask:
  """Replaces a Keras dropout layer's `call` with `global_batch_dropout` (see module docstring)."""

  def call(self, inputs, training=False):
    if training and self.rate > 0:
      return global_batch_dropout(inputs, self.rate, self.seed_generator, self._mask_shape())
    return inputs


@keras.saving.register_keras_serializable(package='cycada_tf')
class GlobalBatchDropout(_GlobalBatchMask, keras.layers.Dropout):
  """`keras.layers.Dropout` with masks that do not depend on the replica count.

  Same arguments as Keras' layer. `noise_shape[0]`, if given, must be None (one mask row per
  example, the default) or 1 (one mask for the whole batch): a fixed batch size would mean a
  different thing for every replica count.
  """

  def __init__(self, rate, noise_shape=None, seed=None, **kwargs):
    super().__init__(rate, noise_shape=noise_shape, seed=seed, **kwargs)
    if self.noise_shape is not None:
      _check_batch_entry(self.noise_shape)

  def _mask_shape(self):
    return self.noise_shape


@keras.saving.register_keras_serializable(package='cycada_tf')
class GlobalBatchSpatialDropout2D(_GlobalBatchMask, keras.layers.SpatialDropout2D):
  """`keras.layers.SpatialDropout2D` (drops whole feature maps) with replica-count-free masks."""

  def _mask_shape(self):
    if self.data_format == 'channels_first':
      return (None, None, 1, 1)
    return (None, 1, 1, None)
