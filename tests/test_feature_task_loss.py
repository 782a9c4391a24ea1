"""The feature stage's task term (`feature.task_weight`, the f_T terms of the paper's Eq. 6).

With the adversarial loss weighted 0, the gate always open and both sides without dropout, one
feature step must move f_T exactly as one supervised Adam step on the same source batch does
(task_weight=1), or not at all (task_weight=0, the release's adversarial-only step).
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from cycada_tf import losses
from cycada_tf import models
from cycada_tf import workflow
from cycada_tf.errors import UserError
from cycada_tf.stages import common
from cycada_tf.stages import feature
from tests.conftest import make_context
from tests.conftest import tiny_config

BATCH = 8


def _config(task_weight):
  config = tiny_config()
  config.feature.update(batch_size=BATCH, encoder_mode='inference', gate_threshold=-1.0,
                        task_weight=task_weight, learning_rate=1e-2)
  config.feature.adversarial_weight = 0.0
  return config


def _batch():
  rng = np.random.default_rng(0)
  images = lambda: tf.constant(rng.uniform(-1, 1, (BATCH, 28, 28, 1)), tf.float32)
  labels = lambda: tf.constant(rng.integers(0, 10, BATCH), tf.int64)
  return (images(), labels()), (images(), labels())


def _one_feature_step(tmp_path, data_dir, task_weight):
  """(f_T's weights before, after one feature step, the step's outputs, the batch)."""
  ctx = make_context(tmp_path, data_dir, _config(task_weight))
  keras.utils.set_random_seed(0)
  f_t, source_encoder = common.new_classifier(ctx), common.new_classifier(ctx)
  discriminator = common.build_network(models.build_feature_discriminator(), (10,))
  stage, _ = feature.build_stage(ctx, f_t, source_encoder, discriminator, ctx.pair.source,
                                 'feature', num_train=64)
  before = [w.copy() for w in f_t.get_weights()]
  batch = _batch()
  outputs = stage.cross_replica_step(batch)
  return ctx, before, f_t.get_weights(), outputs, batch


def test_task_term_is_a_supervised_step_on_the_source_side(tmp_path, offline_data_dir):
  ctx, before, after, outputs, ((xs, ys), _) = _one_feature_step(tmp_path, offline_data_dir, 1.0)
  reference = common.new_classifier(ctx)
  reference.set_weights(before)
  optimizer = common.build_optimizer(common.optimizer(ctx.config.feature), reference)
  with tf.GradientTape() as tape:
    loss = losses.average(losses.task_loss(ys, reference(xs, training=False)[0]), BATCH)
  variables = reference.trainable_variables
  optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
  assert float(outputs['updated']) == 1.0
  assert float(outputs['loss/target_task']) == pytest.approx(float(loss), rel=1e-5)
  for got, want in zip(after, reference.get_weights()):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  assert any(not np.allclose(a, b) for a, b in zip(before, after))


def test_without_task_term_the_step_is_adversarial_only(tmp_path, offline_data_dir):
  _, before, after, outputs, _ = _one_feature_step(tmp_path, offline_data_dir, 0.0)
  assert float(outputs['updated']) == 1.0
  assert 'loss/target_task' not in outputs
  for got, want in zip(after, before):  # adversarial weight 0: nothing moves f_T
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize('weight', [-1.0, float('nan')])
def test_negative_or_nan_task_weight_is_refused(tmp_path, offline_data_dir, weight):
  config = tiny_config()
  config.feature.task_weight = weight
  with pytest.raises(UserError, match=rf'task_weight={weight}; it weights a loss'):
    workflow.run('feature', make_context(tmp_path, offline_data_dir, config))
