"""The release's online semantic-loss classifier (`pixel.semantic_classifier=online`).

The release trains a small classifier on real source images during the pixel stage and zeroes
both semantic terms while its last loss is above 1.0; `svhn_mnist` uses it by default, the other
pairs keep the paper's frozen f_S. Its replica-count independence is in tests/test_distribute.py.
"""

import dataclasses
import os
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

from configs import segmentation
from configs import svhn_mnist
from configs import uci_mnist
from cycada_tf import models
from cycada_tf import trainer
from cycada_tf.errors import UserError
from cycada_tf.stages import common
from cycada_tf.stages import pixel
from tests import conftest


def test_layout_is_the_releases_at_32_pixels():
  """4 valid 3×3 stride-2 convs take 32 px to a 1×1 map of 4·filters channels, then 1024 → 10.

  Parameters as the release's `Classifier(3, 64)`, less the biases of the three convolutions
  that feed a batch norm (3·64 + 64 + 128, which the norm cancels)."""
  net = models.OnlineSemanticClassifier(filters=64)
  logits, features = net(tf.zeros((2, 32, 32, 3)), training=False)
  assert logits.shape == (2, 10) and features.shape == (2, 1024)
  assert net.fc.kernel.shape == (256, 1024)  # the last map is 1×1×256
  release = (3 * 64 * 9 + 64 + 64 * 64 * 9 + 64 + 2 * 64 + 64 * 128 * 9 + 128 + 2 * 128 +
             128 * 256 * 9 + 256 + 2 * 256 + 256 * 1024 + 1024 + 1024 * 10 + 10)
  trainable = sum(int(np.prod(v.shape)) for v in net.trainable_variables)
  assert trainable == release - (64 + 128 + 256)
  gammas = np.concatenate([norm.gamma.numpy() for norm in net.norms])
  assert abs(gammas.mean() - 1.0) < 0.01 and 0.005 < gammas.std() < 0.05  # N(1, 0.02)


def test_defaults_per_pair():
  assert svhn_mnist.get_config().pixel.semantic_classifier == 'online'
  assert uci_mnist.get_config().pixel.semantic_classifier == 'source'
  pixel.check_config(svhn_mnist.get_config())


@pytest.mark.parametrize('make, message', [
    (lambda c: c.pixel.update(semantic_classifier='online'), 'at least 31×31'),
    (lambda c: c.pixel.update(semantic_classifier='frozen'), 'semantic_classifier'),
])
def test_config_errors_name_the_fix(make, message):
  config = uci_mnist.get_config()
  make(config)
  with pytest.raises(UserError, match=message):
    pixel.check_config(config)


def test_segmentation_refuses_the_online_classifier():
  config = segmentation.get_config()
  config.pixel.semantic_classifier = 'online'
  with pytest.raises(UserError, match='digit pairs'):
    pixel.check_config(config)


def _online_context(tmp_path, data_dir, gate_loss=1.0):
  config = conftest.tiny_config()
  config.data.image_size = 32
  config.pixel.update(semantic_classifier='online', semantic_gate_loss=gate_loss, batch_size=8)
  ctx = conftest.make_context(tmp_path, data_dir, config)
  ctx.pair = dataclasses.replace(ctx.pair, image_shape=(32, 32, 1))
  return ctx


def _batch(seed=0):
  rng = np.random.default_rng(seed)
  images = lambda: tf.constant(rng.uniform(-1, 1, (8, 32, 32, 1)), tf.float32)
  labels = tf.constant(rng.integers(0, 10, 8), tf.int64)
  return (images(), labels), (images(), labels)


@pytest.mark.slow
def test_gate_zeroes_the_semantic_term_until_the_classifier_learns(tmp_path, offline_data_dir):
  ctx = _online_context(tmp_path, offline_data_dir)
  keras.utils.set_random_seed(0)
  stage, _, _ = pixel.build_stage(ctx, common.new_classifier(ctx), with_samples=False)
  online = stage.models['semantic_classifier']
  gate_variable = stage.extra_state['semantic_classifier_loss']
  assert np.isinf(gate_variable.numpy())  # no classifier update yet: the gate is shut

  # The release's update, by hand on a copy: one Adam(1e-3, 0.5, 0.999) step of the mean
  # cross-entropy on the real source images and their true labels, in training mode. The
  # semantic terms, on in the second step, must add nothing to it (only the generators learn
  # from them).
  copy = models.OnlineSemanticClassifier(filters=ctx.config.model.discriminator_filters)
  copy(tf.zeros((1, 32, 32, 1)))
  copy.set_weights(online.get_weights())
  optimizer = keras.optimizers.Adam(1e-3, beta_1=0.5, beta_2=0.999)

  def step_and_compare(batch):
    (xs, ys), _ = batch
    with tf.GradientTape() as tape:
      expected = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
          ys, copy(xs, training=True)[0]))
    optimizer.apply_gradients(zip(tape.gradient(expected, copy.trainable_variables),
                                  copy.trainable_variables))
    outputs = stage.replica_step(batch)
    np.testing.assert_allclose(outputs['loss/semantic_classifier'], expected, rtol=1e-5)
    np.testing.assert_allclose(gate_variable.numpy(), expected, rtol=1e-5)
    for want, got in zip(copy.trainable_variables, online.trainable_variables):
      np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-6,
                                 err_msg=got.path)
    return float(outputs['loss/semantic'])

  assert step_and_compare(_batch()) == 0.0  # shut: no update before this step
  gate_variable.assign(0.5)  # a classifier that has learned: the terms count again
  assert step_and_compare(_batch(1)) > 0.0
  gate_variable.assign(1.5)
  assert float(stage.replica_step(_batch(2))['loss/semantic']) == 0.0


@pytest.mark.slow
def test_resume_restores_the_classifier_and_its_gate(tmp_path, offline_data_dir, capsys):
  """Killed after 3 of 6 steps and resumed: the online classifier, its optimizer and its last
  loss (the gate) continue as in the uninterrupted run.

  The killed run is the uninterrupted run's own step-3 checkpoint, alone in a fresh model_dir:
  with a constant learning rate (`decay_epochs=0`) and a log window closed at every step, it
  holds what a run stopped at step 3 saves, without a third pixel fit (a trace of its own).
  """
  strategy = tf.distribute.get_strategy()
  train_config = trainer.TrainConfig(log_every_steps=1, checkpoint_every_steps=3,
                                     steps_per_call=1, max_checkpoints_to_keep=2)

  def run(directory):
    ctx = _online_context(tmp_path / directory, offline_data_dir, gate_loss=100.0)
    assert ctx.config.pixel.decay_epochs == 0
    ctx.config.max_steps = 6
    keras.utils.set_random_seed(0)
    stage, _, _ = pixel.build_stage(ctx, common.new_classifier(ctx), with_samples=False)
    result = trainer.fit(stage, str(tmp_path / directory), strategy, train_config)
    return result, stage

  straight, straight_stage = run('straight')
  saved = trainer.checkpoint_dir(str(tmp_path / 'straight'))
  killed = trainer.checkpoint_dir(str(tmp_path / 'resumed'))
  os.makedirs(killed)
  for name in os.listdir(saved):
    if name.startswith('ckpt-3.'):
      shutil.copy(os.path.join(saved, name), killed)
  tf.compat.v1.train.update_checkpoint_state(killed, os.path.join(killed, 'ckpt-3'))
  capsys.readouterr()
  resumed, resumed_stage = run('resumed')
  assert f'resumed from {os.path.join(killed, "ckpt-3")} at step 3' in capsys.readouterr().out
  assert straight.steps == resumed.steps == 6
  for name in ('semantic_classifier', 'g_st'):
    for a, b in zip(straight_stage.models[name].weights, resumed_stage.models[name].weights):
      np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-5, atol=1e-6, err_msg=a.path)
  np.testing.assert_allclose(resumed_stage.extra_state['semantic_classifier_loss'].numpy(),
                             straight_stage.extra_state['semantic_classifier_loss'].numpy(),
                             rtol=1e-5)
