"""Global-batch dropout (`cycada_tf.models.layers`): Keras' dropout semantics, masks that do not
depend on the replica count."""

import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from cycada_tf import models
from tests import conftest


def _inputs(shape, seed=0):
  # Strictly positive, so an output of 0 means "dropped".
  return 1.0 + tf.random.stateless_uniform(shape, seed=(seed, 0))


@pytest.mark.parametrize('rate', [0.1, 0.5, 0.8])
def test_drop_rate_and_inverted_scaling(rate):
  layer = models.GlobalBatchDropout(rate, seed=1)
  x = _inputs((64, 500))
  y = layer(x, training=True).numpy()
  dropped = y == 0
  # 32,000 Bernoulli(rate) draws: the fraction is within 4 standard deviations of rate.
  assert abs(dropped.mean() - rate) < 4 * np.sqrt(rate * (1 - rate) / dropped.size)
  np.testing.assert_allclose(y[~dropped], x.numpy()[~dropped] / (1 - rate), rtol=1e-6)


def test_spatial_dropout_drops_whole_feature_maps():
  layer = models.GlobalBatchSpatialDropout2D(0.3, seed=2)
  x = _inputs((50, 4, 5, 40))
  y = layer(x, training=True).numpy()
  dropped = (y == 0).all(axis=(1, 2))                    # [batch, channels]
  assert ((y == 0).any(axis=(1, 2)) == dropped).all()   # A map is dropped entirely or not at all.
  assert abs(dropped.mean() - 0.3) < 4 * np.sqrt(0.3 * 0.7 / dropped.size)
  kept = ~(y == 0)
  np.testing.assert_allclose(y[kept], x.numpy()[kept] / 0.7, rtol=1e-6)


def test_spatial_dropout_channels_first():
  layer = models.GlobalBatchSpatialDropout2D(0.5, data_format='channels_first', seed=2)
  y = layer(_inputs((8, 16, 3, 3)), training=True).numpy()
  dropped = (y == 0).all(axis=(2, 3))
  assert ((y == 0).any(axis=(2, 3)) == dropped).all() and 0 < dropped.mean() < 1


def test_noise_shape_broadcasts_and_a_batch_entry_of_1_shares_one_mask():
  x = _inputs((16, 6, 10))
  per_example = models.GlobalBatchDropout(0.5, noise_shape=(None, 1, None), seed=3)
  y = per_example(x, training=True).numpy() == 0
  assert (y == y[:, :1]).all() and not (y == y[:1]).all()
  shared = models.GlobalBatchDropout(0.5, noise_shape=(1, None, None), seed=3)
  y = shared(x, training=True).numpy() == 0
  assert (y == y[:1]).all() and 0 < y.mean() < 1


def test_a_fixed_batch_size_in_noise_shape_is_rejected():
  with pytest.raises(ValueError, match=r'noise_shape\[0\] must be None .* or 1'):
    models.GlobalBatchDropout(0.5, noise_shape=(8, None))


@pytest.mark.parametrize('make', [lambda: models.GlobalBatchDropout(0.5, seed=4),
                                  lambda: models.GlobalBatchSpatialDropout2D(0.5, seed=4)])
def test_identity_at_inference(make):
  layer = make()
  x = _inputs((4, 3, 3, 8))
  for y in (layer(x), layer(x, training=False), tf.function(lambda v: layer(v))(x)):
    np.testing.assert_array_equal(y.numpy(), x.numpy())
  np.testing.assert_array_equal(models.GlobalBatchDropout(0.0)(x, training=True).numpy(),
                                x.numpy())
  assert not np.array_equal(layer(x, training=True).numpy(), x.numpy())


def test_rate_1_drops_everything():
  x = _inputs((2, 3))
  np.testing.assert_array_equal(models.GlobalBatchDropout(1.0)(x, training=True).numpy(), 0.0)


def test_masks_are_determined_by_the_seed_and_change_every_call():
  x = _inputs((8, 3, 3, 16))
  first, second = (models.GlobalBatchSpatialDropout2D(0.5, seed=5) for _ in range(2))
  masks = [first(x, training=True).numpy() == 0 for _ in range(3)]
  again = [second(x, training=True).numpy() == 0 for _ in range(3)]
  np.testing.assert_array_equal(masks, again)
  assert not np.array_equal(masks[0], masks[1]) and not np.array_equal(masks[1], masks[2])
  other = models.GlobalBatchSpatialDropout2D(0.5, seed=6)(x, training=True).numpy() == 0
  assert not np.array_equal(other, masks[0])


@pytest.mark.parametrize('ours, keras_layer', [
    (lambda: models.GlobalBatchDropout(0.4, seed=7), lambda: keras.layers.Dropout(0.4, seed=7)),
    (lambda: models.GlobalBatchSpatialDropout2D(0.4, seed=7),
     lambda: keras.layers.SpatialDropout2D(0.4, seed=7)),
])
def test_one_replica_in_float32_gives_keras_dropout_exactly(ours, keras_layer):
  ours, keras_layer = ours(), keras_layer()
  x = _inputs((6, 4, 4, 8))
  traced = tf.function(lambda v: ours(v, training=True),
                       input_signature=[tf.TensorSpec([None, 4, 4, 8])])  # Unknown batch size.
  for call in (lambda v: ours(v, training=True), traced):
    np.testing.assert_array_equal(call(x).numpy(), keras_layer(x, training=True).numpy())


def test_bfloat16_compute_uses_the_float32_mask():
  x = _inputs((8, 64))
  low = models.GlobalBatchDropout(0.5, seed=8, dtype='mixed_bfloat16')(x, training=True)
  assert low.dtype == tf.bfloat16
  full = models.GlobalBatchDropout(0.5, seed=8)(x, training=True)
  np.testing.assert_array_equal(low.numpy() == 0, full.numpy() == 0)


@pytest.mark.parametrize('make', [
    lambda: models.GlobalBatchDropout(0.3, noise_shape=(None, 1), seed=9, name='d'),
    lambda: models.GlobalBatchSpatialDropout2D(0.2, data_format='channels_first', seed=9, name='s'),
])
def test_config_round_trip(make):
  layer = make()
  clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
  assert type(clone) is type(layer) and clone.get_config() == layer.get_config()
  assert isinstance(clone, keras.layers.Dropout)
  assert not clone.weights  # The seed state is not a weight (as for Keras' dropout).


# Two logical CPUs must be configured before TensorFlow initialises, hence a fresh interpreter.
_REPLICA_SCRIPT = textwrap.dedent('''
  import tensorflow as tf
  cpu = tf.config.list_physical_devices('CPU')[0]
  tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
  import keras
  import numpy as np
  from cycada_tf import models

  def layers():
    return [models.GlobalBatchSpatialDropout2D(0.5, seed=11),
            models.GlobalBatchDropout(0.5, seed=12),
            models.GlobalBatchDropout(0.5, noise_shape=(1, None, None, None), seed=13),
            keras.layers.Dropout(0.5, seed=14)]

  strategy = tf.distribute.MirroredStrategy(['/cpu:0', '/cpu:1'])
  one = layers()  # The default strategy: one replica.
  with strategy.scope():
    two = layers()
  x = 1.0 + tf.random.stateless_uniform((8, 3, 3, 16), seed=(0, 1))
  # As the trainer's input: one pipeline, batched globally, dealt to the replicas in order.
  batches = iter(strategy.experimental_distribute_dataset(
      tf.data.Dataset.from_tensors(x).repeat(3)))

  @tf.function
  def step(batch):
    return strategy.run(lambda v: [layer(v, training=True) for layer in two], args=(batch,))

  for call in range(3):
    outputs = step(next(batches))
    for i, (reference, layer, out) in enumerate(zip(one, two, outputs)):
      shares = [s.numpy() for s in strategy.experimental_local_results(out)]
      states = {tuple(s.numpy()) for s in
                strategy.experimental_local_results(layer.seed_generator.state.value)}
      # Each replica advanced its own copy of the seed state, and all copies are still equal.
      assert states == {(11 + i, call + 1)}, (i, states)
      if i < 3:
        # Replica r's output is rows [4r, 4r + 4) of the 1-replica output: the same masks.
        np.testing.assert_array_equal(np.concatenate(shares), reference(x, training=True).numpy())
      else:
        # Keras' own dropout: every replica applies the same mask to its own rows.
        np.testing.assert_array_equal(shares[0] == 0, shares[1] == 0)
  print('REPLICA_MASKS_OK')
''')


@pytest.mark.slow
def test_two_replicas_apply_the_one_replica_masks():
  conftest.run_python(_REPLICA_SCRIPT, expect='REPLICA_MASKS_OK')


def _random_ops(layer, spec):
  graph = tf.function(lambda v: layer(v, training=True)).get_concrete_function(spec).graph
  return {op.type: op for op in graph.get_operations()
          if op.type.startswith('StatelessRandomUniform')}


def test_rates_in_256ths_draw_one_random_word_per_four_units():
  x = tf.TensorSpec((8, 6, 6, 16))  # 4,608 units.
  half = _random_ops(models.GlobalBatchDropout(0.5, seed=1), x)
  assert set(half) == {'StatelessRandomUniformFullIntV2'}, half
  assert half['StatelessRandomUniformFullIntV2'].outputs[0].shape == (4608 // 4,)
  other = _random_ops(models.GlobalBatchDropout(0.4, seed=1), x)
  assert set(other) == {'StatelessRandomUniformV2'}, other


@pytest.mark.parametrize('rate', [0.25, 0.5, 0.75])
def test_byte_masks_keep_each_unit_with_probability_1_minus_rate(rate):
  # 3 × 2^19 units, so four standard deviations are under 0.3 % of the rate; an odd count of
  # units per example checks the byte unpacking does not need multiples of 4.
  keep = models.layers.keep_mask((3, 524287, 1), rate, keras.random.SeedGenerator(3)).numpy()
  assert keep.shape == (3, 524287, 1) and keep.dtype == bool
  assert abs(keep.mean() - (1 - rate)) < 4 * np.sqrt(rate * (1 - rate) / keep.size)
  # Neighbouring units (bytes of the same random word) are independent: P(both kept) = (1-rate)².
  pairs = (keep[:, :-1] & keep[:, 1:]).mean()
  assert abs(pairs - (1 - rate) ** 2) < 0.005
