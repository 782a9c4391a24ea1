"""The segmentation stages end to end on the offline scene pair, tiny networks, few steps.

One module-scoped pipeline (source → pixel → task → feature → eval → export) runs
on `conftest.scenes_data_dir` (48 train / 16 test scenes per domain); the tests then check what
each stage promised: the mIoU family in metrics.json, label maps through the translated domain,
the per-class table and the prediction grid, and the exports at sizes never trained on.
Digits use the same stages and trainer (tests/test_stages.py).
"""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from cycada_tf import workflow
from cycada_tf.data import domains
from cycada_tf.data import pairs
from cycada_tf.data import translated
from cycada_tf.stages import common
from cycada_tf.stages import evaluate
from tests.conftest import SCENE_SPLITS
from tests.conftest import scalars
from tests.conftest import tiny_segmentation_config

pytestmark = pytest.mark.slow

CLASS_NAMES = ('road', 'sidewalk', 'building', 'sky', 'vegetation', 'car', 'person', 'pole')


@pytest.fixture(scope='module')
def run(tmp_path_factory, scenes_data_dir):
  config = tiny_segmentation_config()
  # Every f_T update also takes Eq. 6's task loss on the translated label maps (with their
  # ignore label); with the gate always open, every step runs it.
  config.feature.update(task_weight=1.0, gate_threshold=-1.0)
  ctx = common.Context(config=config, pair=pairs.PAIRS['scenes_synthetic_real'],
                       model_dir=str(tmp_path_factory.mktemp('seg_run')), data_dir=scenes_data_dir)
  # target_only is source's code on the other domain (tests/test_stages.py runs it for digits).
  for stage in ('source', 'pixel', 'task', 'feature'):
    workflow.run(stage, ctx)
  workflow.run('eval', ctx, eval_stage='feature')
  workflow.run('export', ctx)
  return ctx


def test_supervised_stages_report_the_miou_family(run):
  batches = SCENE_SPLITS['train'] // 8
  for stage, epochs in (('source', 2), ('task', 1)):
    metrics = run.read_metrics(stage)
    assert metrics['steps'] == epochs * batches and metrics['epochs_completed'] == epochs
    for key in ('target_test_miou', 'target_test_fwiou', 'target_test_pixel_accuracy',
                'source_test_miou'):
      assert 0.0 <= metrics[key] <= 1.0, (stage, key)
    assert set(metrics['per_class_iou']) == set(CLASS_NAMES)
    assert 'target_test_accuracy' not in metrics
  # Monitoring is the family's score too.
  events = os.path.join(run.stage_dir('source'), 'train')
  assert len(scalars(events, 'monitor/target_test_miou')) == 2


def test_pixel_trains_on_its_own_crops_and_writes_the_grid(run):
  metrics = run.read_metrics('pixel')
  assert metrics['steps'] == SCENE_SPLITS['train'] // 4
  for key in ('fs_target_miou', 'fs_translated_target_miou', 'fs_translated_source_miou'):
    assert 0.0 <= metrics[key] <= 1.0
  assert os.path.exists(metrics['translations_png'])


def test_task_translates_whole_images_and_keeps_label_maps(run):
  directory = common.translated_source_dir(run)
  info = translated.read_info(directory)
  assert info['task'] == 'segmentation' and info['num_examples'] == SCENE_SPLITS
  spec = common.translated_source_spec(run)
  assert domains.is_segmentation(spec)
  image, label = next(iter(domains.load_domain(spec, 'test')))
  source_image, source_label = next(iter(domains.load_domain('scenes_synthetic', 'test',
                                                              run.data_dir)))
  assert image.shape == source_image.shape and image.dtype == tf.uint8
  np.testing.assert_array_equal(label.numpy(), source_label.numpy())
  assert 'translated_source_test_miou' in run.read_metrics('task')


def test_feature_stage_uses_the_score_map_discriminator_and_the_task_loss(run):
  metrics = run.read_metrics('feature')
  assert metrics['initial_target_test_miou'] == run.read_metrics('task')['target_test_miou']
  assert 0.0 <= metrics['target_test_miou'] <= 1.0
  assert metrics['f_t_updates'] == metrics['steps'] == 2 * (SCENE_SPLITS['train'] // 8)
  task_losses = scalars(os.path.join(run.stage_dir('feature'), 'train'), 'loss/target_task')
  assert task_losses and all(0.0 < v < 100.0 for v in task_losses), task_losses


def test_eval_writes_the_table_and_the_prediction_grid(run):
  out = run.stage_dir(os.path.join('eval', 'feature'))
  metrics = run.read_metrics(os.path.join('eval', 'feature'))
  matrix = np.array(metrics['confusion_matrix'])
  # Every labelled target test pixel is counted once, at full resolution (64x128).
  labels = np.stack([label for _, label in domains.load_domain(
      'scenes_real', 'test', run.data_dir).as_numpy_iterator()])
  assert matrix.sum() == int(np.sum(labels != 255))
  with open(os.path.join(out, evaluate.IOU_TABLE)) as f:
    table = f.read()
  assert '| model | road | sidewalk |' in table and 'mIoU | fwIoU | Pixel acc.' in table
  grid = tf.io.decode_png(tf.io.read_file(os.path.join(out, evaluate.PREDICTIONS_PNG))).numpy()
  assert grid.shape[0] >= 2 * 64 and grid.shape[1] >= 3 * 128  # 2 rows of 3 pictures


def test_exports_answer_at_sizes_never_trained_on(run):
  metrics = run.read_metrics('export')
  assert metrics['exported_stage'] == 'feature'
  assert metrics['target_test_miou'] == pytest.approx(metrics['keras_target_test_miou'],
                                                      abs=1e-6)
  loaded = tf.saved_model.load(metrics['path'])
  images = tf.constant(np.random.default_rng(0).integers(0, 256, (2, 44, 76, 3), np.uint8))
  outputs = loaded.signatures['serving_default'](images=images)
  assert outputs['class_map'].shape == (2, 44, 76) and outputs['class_map'].dtype == tf.uint8
  assert outputs['probabilities'].shape == (2, 44, 76, 8)
  # The served map is the Keras model's prediction at the input's resolution.
  network = common.load_classifier(run, 'feature', needed_by='test')
  logits, _ = network(tf.cast(images, tf.float32) / 127.5 - 1.0, training=False)
  expected = common.predicted_classes(logits, (44, 76)).numpy()
  assert np.mean(outputs['class_map'].numpy() == expected) > 0.999
  translator = tf.saved_model.load(metrics['translator']['path'])
  translated_images = translator.signatures['serving_default'](images=images[:, :40, :72])
  assert translated_images['images'].shape == (2, 40, 72, 3)
  with open(os.path.join(metrics['path'], 'assets.extra', 'cycada_export.json')) as f:
    assert json.load(f)['exported_from']['stage'] == 'feature'


def test_the_semantic_loss_is_available_by_config(run):
  # Off by default for segmentation (the paper's choice for memory), one setting turns it on:
  # f_S's per-pixel predictions are the labels of the translated images.
  import copy  # pylint: disable=g-import-not-at-top
  from cycada_tf.stages import pixel  # pylint: disable=g-import-not-at-top
  config = copy.deepcopy(run.config)
  config.pixel.semantic_weight = 1.0
  ctx = common.Context(config=config, pair=run.pair, model_dir=run.model_dir,
                       data_dir=run.data_dir)
  stage, _ = pixel.build(ctx, fresh=True, num_train=8)
  rng = np.random.default_rng(0)
  side = lambda: (tf.constant(rng.uniform(-1, 1, (4, 32, 32, 3)), tf.float32),
                  tf.constant(rng.integers(0, 8, (4, 32, 32)), tf.uint8))
  outputs = stage.replica_step((side(), side()))
  assert float(outputs['loss/semantic']) > 0.0


def test_resized_evaluation_still_scores_every_full_resolution_pixel(run):
  # Images resized to half width for the networks (32x64), labels kept at 64x128: the scores are
  # resized up before the argmax, so every labelled pixel is counted once, as without resizing.
  import copy  # pylint: disable=g-import-not-at-top
  config = copy.deepcopy(run.config)
  config.data.resize_width = 64
  config.pixel.resize_width = 64
  ctx = common.Context(config=config, pair=run.pair, model_dir=run.model_dir,
                       data_dir=run.data_dir)
  network = common.load_classifier(ctx, 'source', needed_by='test')
  matrix = common.confusion_matrix(ctx, network, 'scenes_real')
  labels = np.stack([label for _, label in domains.load_domain(
      'scenes_real', 'test', run.data_dir).as_numpy_iterator()])
  assert matrix.sum() == int(np.sum(labels != 255))
  images, _ = next(iter(common.eval_dataset(ctx, 'scenes_real', batch_size=2)))
  assert images.shape[1:3] == (32, 64)
  # G_ST runs at the pixel stage's scale and its output comes back at the input's size.
  g_st = common.load_translator(ctx, needed_by='test')
  full = tf.random.uniform((2, 64, 128, 3), -1.0, 1.0)
  out = common.translate(ctx, g_st, full)
  assert out.shape == (2, 64, 128, 3) and float(tf.reduce_max(tf.abs(out))) <= 1.0
