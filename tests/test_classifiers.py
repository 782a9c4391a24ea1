"""Task networks: shapes and sizes (docs/method.md §3), the (logits, features) split, tracing,
checkpoints."""

import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from cycada_tf import errors
from cycada_tf import models
from tests import conftest


def _built(name, batch=2, seed=0):
  keras.utils.set_random_seed(seed)
  net = models.build_classifier(name, 10)
  shape = (batch,) + net.INPUT_SHAPE
  images = tf.random.uniform(shape, -1.0, 1.0, seed=seed)
  net(images, training=False)
  return net, images


@pytest.mark.parametrize('name, feature_dim', [('lenet', 500), ('dtn', 512)])
def test_outputs_are_logits_and_features(name, feature_dim):
  net, images = _built(name, batch=3)
  logits, features = net(images, training=False)
  assert logits.shape == (3, 10)
  assert features.shape == (3, feature_dim)


def test_lenet_parameter_count_by_hand():
  net, _ = _built('lenet')
  conv1 = 20 * (5 * 5 * 1 + 1)        # 520
  conv2 = 50 * (5 * 5 * 20 + 1)       # 25,050
  fc = (4 * 4 * 50) * 500 + 500       # 800 inputs after two valid convs and two pools: 400,500
  logits = 500 * 10 + 10              # 5,010
  assert net.conv1.count_params() == conv1 == 520
  assert net.conv2.count_params() == conv2
  assert net.fc.count_params() == fc
  assert net.count_params() == conv1 + conv2 + fc + logits == 431_080


def test_dtn_parameter_count_by_hand():
  net, _ = _built('dtn')
  # No biases in the convolutions and the feature Dense: each feeds a batch norm, whose beta is
  # the only offset (a bias would be cancelled by the mean subtraction).
  convs = 64 * 25 * 3 + 128 * 25 * 64 + 256 * 25 * 128   # 1,028,800
  conv_bns = 4 * (64 + 128 + 256)     # gamma, beta, moving mean, moving variance
  fc = (4 * 4 * 256) * 512            # 32 → 16 → 8 → 4 with 'same' stride-2 convs: 2,097,152
  fc_bn = 4 * 512
  logits = 512 * 10 + 10              # No norm after it: keeps its bias.
  assert [conv.count_params() for conv in net.convs] == [4_800, 204_800, 819_200]
  assert net.fc.count_params() == fc
  assert net.count_params() == convs + conv_bns + fc + fc_bn + logits == 3_134_922


def test_dtn_biases_would_be_cancelled_by_batch_norm():
  """Why DTN has no bias before batch norm: a per-channel constant there changes nothing."""
  net, images = _built('dtn', batch=6)
  conv = net.convs[0](images)
  shift = tf.random.stateless_normal((conv.shape[-1],), seed=(3, 0))
  norm = net.conv_norms[0]
  # Equal up to float32 rounding of the shifted mean and variance (outputs are of order 1).
  np.testing.assert_allclose(norm(conv + shift, training=True).numpy(),
                             norm(conv, training=True).numpy(), atol=2e-3)


@pytest.mark.parametrize('name', ['lenet', 'dtn'])
def test_features_are_pre_relu_input_of_the_head(name):
  net, images = _built(name)
  logits, features = net(images, training=False)
  assert np.any(features.numpy() < 0), 'features should be taken before the ReLU'
  np.testing.assert_allclose(net.logits(tf.nn.relu(features)).numpy(), logits.numpy(),
                             rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('name', ['lenet', 'dtn'])
def test_dropout_only_in_training(name):
  net, images = _built(name, batch=4)
  first, _ = net(images, training=False)
  second, _ = net(images, training=False)
  np.testing.assert_array_equal(first.numpy(), second.numpy())
  trained, _ = net(images, training=True)
  assert not np.allclose(trained.numpy(), first.numpy())


@pytest.mark.parametrize('name', ['lenet', 'dtn'])
def test_tf_function_matches_eager(name):
  net, images = _built(name)
  traced = tf.function(lambda x: net(x, training=False))
  np.testing.assert_allclose(traced(images)[0].numpy(), net(images)[0].numpy(), atol=1e-5)


@pytest.mark.parametrize('name', ['lenet', 'dtn'])
def test_checkpoint_restores_outputs(name, tmp_path):
  net, images = _built(name, seed=1)
  if name == 'dtn':  # Move BatchNorm's moving statistics away from their initial values.
    net(images, training=True)
  path = tf.train.Checkpoint(classifier=net).write(str(tmp_path / 'ckpt'))
  saved = [name for name, _ in tf.train.list_variables(path) if name.startswith('classifier/')]
  assert len(saved) == len(net.weights)  # No layer left out (RNG seed states are not weights).
  fresh, _ = _built(name, seed=2)
  assert not np.allclose(fresh(images)[0].numpy(), net(images)[0].numpy())
  tf.train.Checkpoint(classifier=fresh).read(path).assert_existing_objects_matched()
  np.testing.assert_allclose(fresh(images)[0].numpy(), net(images)[0].numpy(), atol=1e-6)
  np.testing.assert_allclose(fresh(images)[1].numpy(), net(images)[1].numpy(), atol=1e-6)


def test_unknown_classifier_lists_valid_names():
  with pytest.raises(errors.UserError, match=r"'dtn', 'lenet'"):
    models.build_classifier('resnet', 10)


# Two logical CPUs must be configured before TensorFlow initialises, hence a fresh interpreter.
# One network of each kind of stateful or unusual layer (dropout seed state, BatchNorm moving
# statistics, instance norm, reflection padding, transposed convs, dense on [B, D]) keeps the
# traced step, which dominates this test's time, small.
_DISTRIBUTED_SCRIPT = textwrap.dedent('''
  import tensorflow as tf
  cpu = tf.config.list_physical_devices('CPU')[0]
  tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
  import keras
  from cycada_tf import losses, models

  strategy = tf.distribute.MirroredStrategy(['/cpu:0', '/cpu:1'])
  assert strategy.num_replicas_in_sync == 2
  with strategy.scope():
    nets = {
        'lenet': (models.build_classifier('lenet', 10), (28, 28, 1)),
        'dtn': (models.build_classifier('dtn', 10), (32, 32, 3)),
        'resnet9': (models.ResnetGenerator(3, filters=4, num_blocks=1, dropout=0.5), (32, 32, 3)),
        'feature': (models.build_feature_discriminator(), (10,)),
    }
    for net, shape in nets.values():
      net(tf.zeros((1,) + shape), training=False)
    optimizer = keras.optimizers.SGD(1e-3)
    variables = [v for net, _ in nets.values() for v in net.trainable_variables]
    optimizer.build(variables)

  def replica_step(batch):
    with tf.GradientTape() as tape:
      total = 0.0
      for net, shape in nets.values():
        out = net(tf.zeros((2,) + shape) + batch, training=True)
        out = out[0] if isinstance(out, tuple) else out
        total += losses.average(losses.per_example_mean(tf.square(out)), 4)
    optimizer.apply_gradients(zip(tape.gradient(total, variables), variables))
    return total

  @tf.function
  def step(batch):
    return strategy.reduce('SUM', strategy.run(replica_step, args=(batch,)), axis=None)

  for _ in range(2):
    value = float(step(tf.constant(0.5)))
    assert value == value, 'NaN'
  print('DISTRIBUTED_OK')
''')


@pytest.mark.slow
def test_all_networks_train_under_two_replica_mirrored_strategy():
  conftest.run_python(_DISTRIBUTED_SCRIPT, expect='DISTRIBUTED_OK')
