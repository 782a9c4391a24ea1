"""`config.train.kernels`: the stock and the CPU-tuned paths compute the same networks.

Every network is built once and called under each path on the same input, in float32 and in
bfloat16; outputs and the gradients of every variable must agree (float32: to rounding; bfloat16:
to bfloat16's ~3 significant digits, the two paths ordering their arithmetic differently).
Dropout is off here (its masks are drawn differently on purpose); the masks are checked apart.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from cycada_tf import errors
from cycada_tf import kernels
from cycada_tf import models
from cycada_tf import precision
from cycada_tf.models import layers


def _networks():
  """(name, constructor, input shape) for every network of the project, at small widths."""
  return [
      ('lenet', lambda: models.build_classifier('lenet', 10), (4, 28, 28, 1)),
      ('dtn', lambda: models.build_classifier('dtn', 10), (4, 32, 32, 3)),
      ('digit_generator', lambda: models.build_generator('digit', 1, filters=8), (2, 28, 28, 1)),
      ('resnet_generator', lambda: models.ResnetGenerator(3, filters=32, num_blocks=2),
       (2, 32, 32, 3)),
      ('patchgan', lambda: models.build_image_discriminator('patchgan', filters=16),
       (2, 32, 32, 3)),
      ('patchgan_same', lambda: models.build_image_discriminator('patchgan', filters=16,
                                                                 padding='same'), (2, 28, 28, 1)),
      ('conv6', lambda: models.build_image_discriminator('conv6', filters=8), (2, 28, 28, 1)),
      ('feature_discriminator', models.build_feature_discriminator, (4, 10)),
  ]


def _outputs_and_gradients(network, x):
  with tf.GradientTape() as tape:
    outputs = network(x, training=False)
    outputs = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
    loss = tf.add_n([tf.reduce_sum(tf.square(tf.cast(o, tf.float32))) for o in outputs])
  grads = tape.gradient(loss, network.trainable_variables)
  return [o.numpy() for o in outputs], [g.numpy() for g in grads]


@pytest.mark.parametrize('precision_name, filter_gradient', [('fp32', 'auto'),
                                                             ('bf16', 'swapped'),
                                                             ('bf16', 'native')])
@pytest.mark.parametrize('name, build, shape', _networks(), ids=[n for n, _, _ in _networks()])
def test_stock_and_cpu_tuned_agree(name, build, shape, precision_name, filter_gradient):
  """fp32: equal to rounding. bf16: the paths differ by less than bf16 differs from fp32, with
  the swapped filter gradient and with oneDNN's own (whichever this CPU picks by default)."""
  del name
  keras.utils.set_random_seed(0)
  x = tf.random.stateless_uniform(shape, seed=(1, 2), minval=-1.0, maxval=1.0)
  reference = build()
  reference(x, training=False)
  with kernels.scope('stock'):
    fp32 = _outputs_and_gradients(reference, x)
  with precision.policy_scope(precision_name):
    network = build()
    network(x, training=False)
    network.set_weights(reference.get_weights())
    results = {}
    for path in ('stock', 'cpu_tuned'):
      with kernels.scope(path, filter_gradient=filter_gradient):
        results[path] = _outputs_and_gradients(network, x)
  flat = {key: outputs + grads for key, (outputs, grads) in
          dict(results, fp32=fp32).items()}
  for want, stock, tuned in zip(flat['fp32'], flat['stock'], flat['cpu_tuned']):
    if precision_name == 'fp32':
      np.testing.assert_allclose(tuned, stock, rtol=1e-4, atol=1e-4 * np.abs(stock).max())
    else:
      bf16_error = np.abs(stock - want).max()
      assert np.abs(tuned - stock).max() <= bf16_error + 1e-6


def test_paths_share_variables_so_checkpoints_load_under_either(tmp_path):
  keras.utils.set_random_seed(0)
  x = tf.zeros((1, 32, 32, 3))
  with kernels.scope('cpu_tuned'):
    tuned = models.ResnetGenerator(3, filters=8, num_blocks=1)
    tuned(x)
  path = tf.train.Checkpoint(g=tuned).save(str(tmp_path / 'ckpt'))
  with kernels.scope('stock'):
    stock = models.ResnetGenerator(3, filters=8, num_blocks=1)
    stock(x)
    tf.train.Checkpoint(g=stock).restore(path).assert_existing_objects_matched()
    images = tf.random.stateless_uniform((2, 32, 32, 3), seed=(5, 6), minval=-1.0, maxval=1.0)
    out_stock = stock(images).numpy()
  with kernels.scope('cpu_tuned'):
    out_tuned = tuned(images).numpy()
  np.testing.assert_allclose(out_stock, out_tuned, rtol=1e-4, atol=1e-5)


def test_stock_masks_are_keras_uniforms_with_the_right_keep_rate():
  with kernels.scope('stock'):
    seed = keras.random.SeedGenerator(3)
    expected = keras.random.uniform((64, 256), seed=keras.random.SeedGenerator(3)) >= 0.5
    mask = layers.keep_mask((64, 256), 0.5, seed).numpy()
  np.testing.assert_array_equal(mask, expected.numpy())
  with kernels.scope('cpu_tuned'):
    tuned = layers.keep_mask((64, 256), 0.5, keras.random.SeedGenerator(3)).numpy()
  assert not np.array_equal(tuned, mask)  # bytes, not float uniforms
  assert abs(tuned.mean() - 0.5) < 0.02 and abs(mask.mean() - 0.5) < 0.02


def test_auto_picks_cpu_tuned_only_when_every_replica_is_a_cpu():
  assert kernels.resolve('auto', tf.distribute.get_strategy()) == 'cpu_tuned'  # no GPU here
  assert kernels.resolve('stock') == 'stock'
  with pytest.raises(errors.UserError, match='kernels'):
    kernels.resolve('fast')


def test_filter_gradient_auto_is_native_only_on_amx_cpus():
  assert kernels.resolve_filter_gradient('auto', {'avx512f', 'avx512_bf16', 'amx_bf16'}) == 'native'
  assert kernels.resolve_filter_gradient('auto', {'avx512f', 'avx512_bf16'}) == 'swapped'
  assert kernels.resolve_filter_gradient('auto', set()) == 'swapped'
  assert kernels.resolve_filter_gradient('swapped', {'amx_bf16'}) == 'swapped'
  assert kernels.resolve_filter_gradient('native', set()) == 'native'
  with pytest.raises(errors.UserError, match='filter_gradient'):
    kernels.resolve_filter_gradient('fast')


def test_scope_sets_and_restores_the_filter_gradient():
  outside = kernels.swaps_filter_gradient()
  assert outside == (kernels.resolve_filter_gradient('auto') == 'swapped')
  with kernels.scope('cpu_tuned', filter_gradient='native'):
    assert not kernels.swaps_filter_gradient()
    with kernels.scope('cpu_tuned', filter_gradient='swapped'):
      assert kernels.swaps_filter_gradient()
    assert not kernels.swaps_filter_gradient()
    with kernels.scope('stock'):  # no filter_gradient given: the enclosing choice stays
      assert not kernels.swaps_filter_gradient() and kernels.active() == 'stock'
  assert kernels.swaps_filter_gradient() == outside
  path = kernels.active()
  with pytest.raises(errors.UserError, match='filter_gradient'):
    with kernels.scope('stock', filter_gradient='fast'):
      pass
  assert kernels.active() == path and kernels.swaps_filter_gradient() == outside


def test_bf16_warning_names_the_missing_cpu_feature():
  strategy = tf.distribute.get_strategy()
  assert 'emulated' in precision.bf16_warning(strategy, flags={'avx2', 'fma'})
  assert precision.bf16_warning(strategy, flags={'avx2', 'avx512_bf16'}) is None
  assert precision.bf16_warning(strategy, flags={'amx_bf16'}) is None
