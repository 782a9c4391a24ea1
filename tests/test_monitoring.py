"""What the supervised stages and `eval` tell TensorBoard: monitoring scalars and HParams.

A source run of two short UCI epochs (batch 128) is shared by most tests; the check that
monitoring leaves training unchanged trains a second, unmonitored copy and compares checkpoints.
"""

import os

import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import plugin_event_multiplexer
from tensorboard.plugins.hparams import metadata as hparams_metadata

from cycada_tf import workflow
from cycada_tf.stages import common
from cycada_tf.stages import source
from tests.conftest import make_context
from tests.conftest import pretend_finished_pixel
from tests.conftest import scalars
from tests.conftest import tiny_config

MONITOR_TAGS = ('monitor/source_test_accuracy', 'monitor/target_test_accuracy')
STEPS_PER_EPOCH = 11  # 1,437 UCI train digits in batches of 128


def _config(monitor_every_epochs=1, epochs=2):
  config = tiny_config()
  config.source.update(batch_size=128, epochs=epochs)
  config.train.monitor_every_epochs = monitor_every_epochs
  return config


@pytest.fixture(scope='module')
def monitored_run(tmp_path_factory, offline_data_dir):
  """`source` with monitoring after every epoch, then `eval` of its classifier."""
  ctx = make_context(tmp_path_factory.mktemp('monitored'), offline_data_dir, _config())
  workflow.run('source', ctx)
  workflow.run('eval', ctx, eval_stage='source')
  return ctx


def _tensorboard_view(model_dir):
  """TensorBoard's own reading of `model_dir`: its event multiplexer, loaded."""
  multiplexer = plugin_event_multiplexer.EventMultiplexer()
  multiplexer.AddRunsFromDirectory(model_dir)
  multiplexer.Reload()
  return multiplexer


def _hparams_of(multiplexer, run):
  """(session hparams as {name: python value}, experiment's hparam names, its metric tags)."""
  content = multiplexer.PluginRunToTagToContent(hparams_metadata.PLUGIN_NAME)[run]
  start = hparams_metadata.parse_session_start_info_plugin_data(
      content[hparams_metadata.SESSION_START_INFO_TAG])
  experiment = hparams_metadata.parse_experiment_plugin_data(
      content[hparams_metadata.EXPERIMENT_TAG])
  values = {name: getattr(value, value.WhichOneof('kind'))
            for name, value in start.hparams.items()}
  return (values, {info.name for info in experiment.hparam_infos},
          {(info.name.group, info.name.tag) for info in experiment.metric_infos})


def _scalar_descriptions(event_dir):
  descriptions = {}
  for name in os.listdir(event_dir):
    for event in tf.compat.v1.train.summary_iterator(os.path.join(event_dir, name)):
      for value in event.summary.value:
        if value.metadata.summary_description:
          descriptions[value.tag] = value.metadata.summary_description
  return descriptions


def test_source_logs_test_accuracies_each_epoch_as_monitoring(monitored_run):
  ctx = monitored_run
  events = os.path.join(ctx.stage_dir('source'), 'train')
  metrics = ctx.read_metrics('source')
  for tag, final in zip(MONITOR_TAGS, ('source_test_accuracy', 'target_test_accuracy')):
    values = scalars(events, tag)
    assert len(values) == 2  # one per epoch
    assert values[-1] == pytest.approx(metrics[final], abs=1e-6)  # the model metrics.json reports
  descriptions = _scalar_descriptions(events)
  for tag in MONITOR_TAGS:
    assert 'monitoring only: never used to choose a setting or stop' in descriptions[tag].lower()


def test_stage_runs_carry_their_settings_and_metrics_for_hparams(monitored_run):
  ctx = monitored_run
  view = _tensorboard_view(ctx.model_dir)
  hparams, columns, metric_tags = _hparams_of(view, 'source')
  assert hparams['seed'] == 0 and hparams['pair'] == 'uci_mnist' and hparams['stage'] == 'source'
  assert hparams['source.batch_size'] == 128 and hparams['source.epochs'] == 2
  assert hparams['source.learning_rate'] == pytest.approx(ctx.config.source.learning_rate)
  assert hparams['model.classifier'] == 'lenet' and hparams['train.steps_per_call'] == 5
  assert hparams['train.monitor_every_epochs'] == 1 and hparams['data.cache'] is True
  assert not any(name.startswith(('pixel.', 'feature.')) for name in hparams)  # other stages'
  assert {'pixel.cycle_weight', 'feature.gate_threshold'} <= columns  # ...are still columns
  assert {('', 'target_test_accuracy'), ('', 'source_test_accuracy')} <= metric_tags
  metrics = ctx.read_metrics('source')
  final = view.Tensors('source', 'target_test_accuracy')
  assert [event.step for event in final] == [metrics['steps']]
  assert float(tf.make_ndarray(final[0].tensor_proto)) == pytest.approx(
      metrics['target_test_accuracy'], abs=1e-6)

  hparams, _, metric_tags = _hparams_of(view, 'eval/source')
  assert hparams['evaluated_stage'] == 'source' and hparams['stage'] == 'eval/source'
  assert hparams['eval.batch_size'] == 250 and hparams['source.learning_rate'] > 0
  assert ('', 'target_test_accuracy') in metric_tags
  final = view.Tensors('eval/source', 'target_test_accuracy')
  assert float(tf.make_ndarray(final[0].tensor_proto)) == pytest.approx(
      ctx.read_metrics('eval/source')['target_test_accuracy'], abs=1e-6)


def _checkpoint_values(stage_dir):
  """Every numeric variable of a stage's last checkpoint (weights, optimizer, seeds, step)."""
  reader = tf.train.load_checkpoint(os.path.join(stage_dir, 'checkpoints'))
  return {name: reader.get_tensor(name)
          for name, dtype in reader.get_variable_to_dtype_map().items()
          if dtype != tf.string}


def test_monitoring_leaves_training_unchanged(monitored_run, tmp_path):
  ctx = make_context(tmp_path, monitored_run.data_dir, _config(monitor_every_epochs=0))
  unmonitored = workflow.run('source', ctx)
  assert not scalars(os.path.join(ctx.stage_dir('source'), 'train'), MONITOR_TAGS[0])
  assert scalars(os.path.join(monitored_run.stage_dir('source'), 'train'), MONITOR_TAGS[0])
  monitored = monitored_run.read_metrics('source')
  for key in ('source_test_accuracy', 'target_test_accuracy', 'steps', 'final_train_metrics'):
    assert monitored[key] == unmonitored[key], key
  expected = _checkpoint_values(monitored_run.stage_dir('source'))
  actual = _checkpoint_values(ctx.stage_dir('source'))
  assert expected.keys() == actual.keys() and len(expected) > 10
  for name, value in expected.items():
    np.testing.assert_array_equal(actual[name], value, err_msg=name)


def _logged_epochs(ctx, stage, epochs):
  """Calls `stage.on_epoch_end` as the trainer does (inside a writer at each epoch's end step)
  and returns the 0-based epochs after which it logged."""
  logged = []
  writer = tf.summary.create_file_writer(ctx.stage_dir('hook'))
  for epoch in range(epochs):
    with writer.as_default(step=(epoch + 1) * stage.steps_per_epoch):
      assert stage.on_epoch_end(epoch, {'loss': 1.0}) is None  # never stops training
    writer.flush()
    if len(scalars(ctx.stage_dir('hook'), MONITOR_TAGS[1])) > len(logged):
      logged.append(epoch)
  return logged


def test_monitor_every_n_epochs_and_after_the_last(tmp_path, offline_data_dir):
  ctx = make_context(tmp_path, offline_data_dir, _config(monitor_every_epochs=2, epochs=5))
  stage, _ = source.build(ctx)
  assert _logged_epochs(ctx, stage, 5) == [1, 3, 4]
  ctx.config.train.monitor_every_epochs = 0
  stage, _ = source.build(ctx)
  assert stage.on_epoch_end is None  # off: the trainer's calls may run across epoch ends


def test_monitor_logs_the_last_epoch_of_a_shortened_run(tmp_path, offline_data_dir):
  config = _config(monitor_every_epochs=10, epochs=5)
  config.max_steps = 2 * STEPS_PER_EPOCH + 3  # ends in epoch 2 (0-based), at its 3rd step
  ctx = make_context(tmp_path, offline_data_dir, config)
  stage, _ = source.build(ctx)
  assert _logged_epochs(ctx, stage, 3) == [2]


def test_monitor_evaluates_on_the_chief_only(tmp_path, offline_data_dir, monkeypatch):
  ctx = make_context(tmp_path, offline_data_dir, _config())
  stage, _ = source.build(ctx)
  monkeypatch.setattr(common.Context, 'is_chief', property(lambda self: False))

  def fail(*args, **kwargs):
    raise AssertionError('a non-chief worker evaluated')

  monkeypatch.setattr(common, 'monitored_accuracy', fail)
  monkeypatch.setattr(common, 'score_on', fail)
  assert _logged_epochs(ctx, stage, 2) == []


def test_monitored_accuracy_equals_score_on_and_reads_the_split_once(tmp_path,
                                                                     offline_data_dir):
  ctx = make_context(tmp_path, offline_data_dir, _config())
  with ctx.strategy.scope():
    classifier = common.new_classifier(ctx)
  memo = {}
  first = common.monitored_accuracy(ctx, classifier, ctx.pair.target, memo)
  cached = dict(memo)
  assert first == common.score_on(ctx, classifier, ctx.pair.target)
  assert common.monitored_accuracy(ctx, classifier, ctx.pair.target, memo) == first
  assert len(memo) == 1 and all(memo[k] is v for k, v in cached.items())  # the same dataset


@pytest.mark.slow
def test_task_stage_logs_monitoring_and_hparams(tmp_path, offline_data_dir):
  """The task stage (on G_ST(source)) shares the supervised stage's monitor and HParams.

  It needs only a pixel stage's G_ST, and any G_ST will do, so the pixel stage is an untrained
  generator's checkpoint; f_T starts from scratch (asserted below), so no source stage either.
  """
  config = _config()
  config.task.update(batch_size=128, epochs=2)
  ctx = make_context(tmp_path, offline_data_dir, config)
  pretend_finished_pixel(ctx, seed=0)
  workflow.run('task', ctx)
  events = os.path.join(ctx.stage_dir('task'), 'train')
  metrics = ctx.read_metrics('task')
  for tag in MONITOR_TAGS:
    assert len(scalars(events, tag)) == 2
  assert scalars(events, MONITOR_TAGS[1])[-1] == pytest.approx(metrics['target_test_accuracy'],
                                                                abs=1e-6)
  hparams, _, metric_tags = _hparams_of(_tensorboard_view(ctx.model_dir), 'task')
  assert hparams['stage'] == 'task' and hparams['task.init_from'] == 'scratch'
  assert ('', 'translated_source_test_accuracy') in metric_tags
