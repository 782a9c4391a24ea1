"""Runs a named stage, or the whole CyCADA pipeline, for one dataset pair.

`run(stage, ctx)` is what `train/main.py` calls; the stage modules in `cycada_tf/stages/` each
build their models and step and hand them to the one trainer.
"""

import contextlib
import importlib

import keras

from cycada_tf import distribute
from cycada_tf import kernels
from cycada_tf import precision
from cycada_tf import results as results_lib
from cycada_tf.stage_table import PIPELINE, STAGE_MODULES, TRAINABLE_STAGES, validate_stage
from cycada_tf.errors import check_choice
from cycada_tf.errors import check_positive


def _stage_attribute(stage, index):
  module_name, *names = STAGE_MODULES[stage]
  return getattr(importlib.import_module(f'cycada_tf.stages.{module_name}'), names[index])


def _stage_function(stage):
  return _stage_attribute(stage, 0)


def stage_builder(stage):
  """The `build(ctx, fresh=False, num_train=None)` of a trainable stage (see `stage_table`)."""
  check_choice('stage', stage, TRAINABLE_STAGES, problem=' does not train')
  return _stage_attribute(stage, 1)


@contextlib.contextmanager
def stage_scope(stage, ctx, precision_name=None, kernel_path=None):
  """Builds and runs `stage`'s models under its precision policy and kernel path.

  Both come from the config unless given: `train.bench` passes each variant it compares.
  """
  with precision.policy_scope(precision_name or _stage_precision(stage, ctx.config)), \
      kernels.scope(kernel_path or ctx.config.train.get('kernels', 'auto'), ctx.strategy,
                    ctx.config.train.get('filter_gradient', 'auto')):
    yield


def check_config(stage, config):
  """Refuses the bad settings of every stage `stage` runs (all of the pipeline's for `all`)
  before any of them trains: a typo in a feature setting fails in a second, not after the pixel
  stage's hour. Each stage module may define `check_config(config)` raising a UserError."""
  validate_stage(stage)
  check_train_config(config)
  for name in PIPELINE if stage == 'all' else (stage,):
    # Checked here, so that a batch size of 0 fails now with the setting's name, not when the
    # stage builds its pipeline after the earlier stages of `all` trained.
    section = config.get(name)
    if section is not None and 'batch_size' in section:
      check_positive(f'--config.{name}.batch_size', section.batch_size)
    module = importlib.import_module(f'cycada_tf.stages.{STAGE_MODULES[name][0]}')
    check = getattr(module, 'check_config', None)
    if check is not None:
      check(config)


# `trainer.fit` cuts its calls at multiples of these: 0 would divide by zero or never advance.
POSITIVE_TRAIN_SETTINGS = ('steps_per_call', 'log_every_steps', 'checkpoint_every_steps',
                           'max_checkpoints_to_keep', 'epochs_per_iterator')


def check_train_config(config):
  """Raises a UserError unless every step count of `config.train` is at least 1."""
  for name in POSITIVE_TRAIN_SETTINGS:
    check_positive(f'--config.train.{name}', config.train.get(name, 1))


def _run_stage(stage, ctx, *args):
  """Runs one stage from a freshly seeded random state.

  Re-seeding per stage makes a stage's result independent of what ran before it in the same
  process (data preparation, earlier stages), so `--stage=all` and stage-by-stage commands with
  the same `--seed` train identical models.
  """
  keras.utils.set_random_seed(ctx.seed)
  if ctx.is_chief:
    print(f'[{stage}] starting: building the models and the input pipeline', flush=True)
  with stage_scope(stage, ctx):
    return _stage_function(stage)(ctx, *args)


def _stage_precision(stage, config):
  """The precision a stage's models are built in: `config.train.precision`, except `export`.

  Exported SavedModels are always float32 so that any serving machine runs them (the weights
  are float32 whatever the training precision, so nothing is lost).
  """
  if stage == 'export':
    return 'fp32'
  return config.train.get('precision', 'fp32')


def run(stage, ctx, eval_stage=None):
  """Runs `stage` (or every stage of the pipeline for 'all') and returns its metrics."""
  validate_stage(stage)
  if stage == 'all':
    result = run_all(ctx)
  elif stage == 'eval':
    result = _run_stage('eval', ctx, eval_stage)
  else:
    result = _run_stage(stage, ctx)
  # With several workers, none may exit while another still works (see distribute.barrier):
  # the chief alone exports and evaluates, so the other workers finish first.
  distribute.barrier(ctx.strategy)
  return result


def run_all(ctx):
  """Runs the pipeline, skipping finished stages, so a rerun after a crash resumes.

  Prints the paper's Table 2 row layout for this run at the end.
  """
  results = {}
  for stage in PIPELINE:
    # An export is finished only while it still describes the latest checkpoints: a stage
    # retrained since must be exported again, though export/metrics.json exists.
    finished = (importlib.import_module('cycada_tf.stages.export').is_current(ctx)
                if stage == 'export' else ctx.is_done(stage))
    if finished:
      print(f'[all] {stage}: already finished ({ctx.metrics_path(stage)}), skipped', flush=True)
      results[stage] = ctx.read_metrics(stage)
      continue
    results[stage] = _run_stage(stage, ctx)
  if ctx.is_chief:
    summary = results_lib.summarise([results_lib.target_accuracies(ctx.model_dir)])
    score = 'mIoU' if ctx.is_segmentation else 'accuracy'
    print(f'\n[all] {ctx.pair.name}, seed {ctx.seed}, target test {score}:\n'
          f'{results_lib.markdown_table(summary, ctx.pair.name, score)}', flush=True)
  return results
