"""The digit stages end to end on the real offline pair, with tiny networks and few steps.

One module-scoped pipeline (source → target_only → pixel → task → feature → eval) runs in a
temporary model_dir; the tests then check what each stage promised to write and compute.
"""

import os
import re

import numpy as np
import pytest
import tensorflow as tf

from cycada_tf import workflow
from cycada_tf.data import pipeline
from cycada_tf.data import translated
from cycada_tf.errors import UserError
from cycada_tf.stages import common
from cycada_tf.stages import pixel
from tests.conftest import make_context
from tests.conftest import scalars
from tests.conftest import summaries_of
from tests.conftest import tiny_config

# Trains real stages end to end: excluded from the fast tier (-m "not slow").
pytestmark = pytest.mark.slow


# Logged every 5 steps, a translation grid every 10 (tiny_config); 43 ends between both.
PIXEL_STEPS = 43


@pytest.fixture(scope='module')
def pipeline_dir(tmp_path_factory, offline_data_dir):
  model_dir = tmp_path_factory.mktemp('run')
  ctx = make_context(model_dir, offline_data_dir)
  # 176 steps at 1e-3 (base's 1e-4 is sized for 100 epochs): a usable f_S for the semantic loss
  ctx.config.source.update(epochs=4, learning_rate=1e-3)
  ctx.config.max_steps = 0
  workflow.run('source', ctx)
  for stage, steps in (('target_only', 40), ('pixel', PIXEL_STEPS), ('task', 40)):
    ctx.config.max_steps = steps
    workflow.run(stage, ctx)
  ctx.config.max_steps = 0
  workflow.run('feature', ctx)
  workflow.run('eval', ctx, eval_stage='feature')
  return ctx


def test_source_stage_reports_both_accuracies(pipeline_dir):
  metrics = pipeline_dir.read_metrics('source')
  assert 0.0 <= metrics['target_test_accuracy'] <= 1.0
  assert metrics['source_test_accuracy'] > 0.5  # 176 steps of LeNet on UCI digits
  assert metrics['steps'] == 176 and metrics['trained_on'] == 'uci_digits'
  assert os.listdir(os.path.join(pipeline_dir.stage_dir('source'), 'train'))


def test_target_only_trains_on_target(pipeline_dir):
  metrics = pipeline_dir.read_metrics('target_only')
  assert metrics['trained_on'] == 'mnist_sample' and metrics['steps'] == 40


def test_pixel_losses_fall_and_grid_is_written(pipeline_dir):
  events = os.path.join(pipeline_dir.stage_dir('pixel'), 'train')
  cycle, semantic = scalars(events, 'loss/cycle'), scalars(events, 'loss/semantic')
  assert len(cycle) == 9 and len(semantic) == 9  # steps 5, 10, ..., 40 and the last, 43
  assert cycle[-1] < cycle[0]
  assert semantic[-1] < semantic[0]
  metrics = pipeline_dir.read_metrics('pixel')
  assert {'fs_translated_target_accuracy', 'fs_translated_source_accuracy',
          'fs_target_accuracy'} <= set(metrics)
  assert set(metrics['final_train_metrics']) == {
      'loss/gan_st', 'loss/gan_ts', 'loss/cycle', 'loss/semantic', 'loss/generator_total',
      'loss/d_t', 'loss/d_s'}
  assert os.path.exists(metrics['translations_png'])


def test_pixel_grid_is_written_first_every_and_last(pipeline_dir):
  """A run shorter than `image_every_steps` must still show the user a translation, so the
  grid is logged at the first log step and the final step as well as every 10 steps.

  Log steps 5, 10, ..., 40, 43: the first (before any multiple of 10, as a run shorter than
  image_every_steps would end), each multiple of 10, and the final step (not a multiple).
  """
  assert pipeline_dir.config.pixel.image_every_steps == 10
  events = os.path.join(pipeline_dir.stage_dir('pixel'), 'train')
  assert [step for step, _ in summaries_of(events, 'translations')] == [
      5, 10, 20, 30, 40, PIXEL_STEPS]


def test_task_input_is_g_st_output(pipeline_dir):
  ctx = pipeline_dir
  g_st = common.load_translator(ctx, needed_by='test')
  images, labels = translated.read_all(common.translated_source_dir(ctx), 'train')
  source = pipeline.domain_dataset(ctx.pair.source, 'train', ctx.image_shape, batch_size=64,
                                   data_dir=ctx.data_dir)
  first_images, first_labels = next(iter(source))
  expected = translated.to_uint8(g_st(first_images, training=False)).numpy()
  np.testing.assert_array_equal(labels[:64], first_labels.numpy())
  assert np.abs(images[:64].astype(int) - expected.astype(int)).max() <= 1
  assert images.shape == (1437, 28, 28, 1)
  metrics = ctx.read_metrics('task')
  assert metrics['trained_on'] == common.translated_source_spec(ctx)
  assert metrics['initialised_from'] == 'scratch'  # the release's train_task_net
  assert 0.0 <= metrics['target_test_accuracy'] <= 1.0


def test_feature_stage_reports_updates_and_reason(pipeline_dir):
  metrics = pipeline_dir.read_metrics('feature')
  assert metrics['initialised_from'] == 'task'
  assert metrics['source_side'] == common.translated_source_spec(pipeline_dir)
  assert metrics['f_t_updates'] >= 0
  assert metrics['stop_reason']
  assert 0.0 <= metrics['translated_source_test_accuracy'] <= 1.0  # the label-free signal
  events = os.path.join(pipeline_dir.stage_dir('feature'), 'train')
  assert scalars(events, 'monitor/target_test_accuracy')
  assert scalars(events, 'gated_off')
  if pipeline_dir.config.feature.task_weight and metrics['f_t_updates']:
    assert any(scalars(events, 'loss/target_task'))


def test_eval_writes_confusion_matrix(pipeline_dir):
  metrics = pipeline_dir.read_metrics(os.path.join('eval', 'feature'))
  matrix = np.array(metrics['confusion_matrix'])
  assert matrix.shape == (10, 10) and matrix.sum() == 1000
  assert metrics['target_test_accuracy'] == pytest.approx(np.trace(matrix) / 1000)
  assert metrics['target_test_accuracy'] == pytest.approx(
      pipeline_dir.read_metrics('feature')['target_test_accuracy'])
  assert os.path.exists(os.path.join(pipeline_dir.stage_dir('eval/feature'),
                                     'confusion_matrix.png'))


def test_ablation_overrides_remove_loss_terms(pipeline_dir):
  """`semantic_weight=0` and `cycle_weight=0` are one override each (paper's ablations).

  One eager step shows which loss terms the step computes: the compiled step `fit` runs is the
  same Python function traced (its metrics' keys are the step's outputs).
  """
  config = tiny_config()
  config.pixel.semantic_weight = 0.0
  ctx = make_context(pipeline_dir.model_dir, pipeline_dir.data_dir, config)
  classifier = common.load_classifier(ctx, 'source', needed_by='test')
  stage, _, _ = pixel.build_stage(ctx, classifier, with_samples=False)
  rng = np.random.default_rng(0)
  side = lambda: (tf.constant(rng.uniform(-1, 1, (16, *ctx.image_shape)), tf.float32),
                  tf.constant(rng.integers(0, 10, 16), tf.int64))
  outputs = stage.replica_step((side(), side()))
  assert 'loss/semantic' not in outputs and 'loss/cycle' in outputs

  config = tiny_config()
  config.pixel.cycle_weight = 0.0
  weights = pixel._weights(config.pixel)  # pylint: disable=protected-access
  assert weights['cycle'] == 0.0 and weights['semantic'] == 1.0


def test_stage_without_prerequisite_names_the_command(tmp_path, offline_data_dir):
  ctx = make_context(tmp_path, offline_data_dir)
  # The whole command, as the user can paste it (train.main prints the message as it is).
  with pytest.raises(UserError, match=re.escape(
      f'run `python -m train.main --stage=pixel --dataset=uci_mnist --model_dir={tmp_path}`')):
    workflow.run('task', ctx)
  with pytest.raises(UserError, match='--stage=source'):
    workflow.run('pixel', ctx)


def test_unknown_stage_lists_valid_names():
  with pytest.raises(UserError, match='is unknown; valid: source, target_only'):
    workflow.validate_stage('pixels')
