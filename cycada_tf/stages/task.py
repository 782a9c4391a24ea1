"""Stage `task`: f_T trained on the source set translated by G_ST — the "pixel only" model.

The source train and test splits are translated once with the pixel stage's G_ST into
`<model_dir>/task/translated_source/` (see `cycada_tf.data.translated`), and again whenever the
pixel checkpoint changes (`pixel_checkpoint_id`), then f_T learns from
(G_ST(x_s), y_s) with the same supervised step as the source stage. f_T starts from scratch
(`--config.task.init_from=scratch`, the default: the release's `train_task_net` loads no weights)
or from f_S (`source`).
"""

import os

import keras
import tensorflow as tf

from cycada_tf import distribute
from cycada_tf import trainer
from cycada_tf.data import domains
from cycada_tf.data import pipeline
from cycada_tf.data import translated
from cycada_tf.errors import UserError
from cycada_tf.errors import check_choice
from cycada_tf.stages import common

INIT_FROM = ('scratch', 'source')


def pixel_checkpoint_id(ctx):
  """Which pixel checkpoint G_ST comes from: its name and a hash of its saved values.

  The name alone (`ckpt-620`) repeats when pixel is retrained to the same step; the values'
  hash (`trainer.checkpoint_fingerprint`) changes whenever the weights do, and only then. Every
  worker reads the chief's checkpoint in model_dir, so all of them compute the same id.
  """
  ctx.require('pixel', needed_by='task')
  checkpoints = trainer.checkpoint_dir(ctx.stage_dir('pixel'))
  latest = tf.train.latest_checkpoint(checkpoints)
  if latest is None:
    raise UserError(f'stage task needs G_ST, but {checkpoints} has no checkpoint. Fix: run '
                    f'`{ctx.command_for("pixel")}` again.')
  return {'pixel_checkpoint': os.path.basename(latest),
          'weights_sha256': trainer.checkpoint_fingerprint(latest)}


def translate_source(ctx):
  """Renders the source train/test splits in target style, unless done with this G_ST already."""
  directory = common.translated_source_dir(ctx)
  produced_by = pixel_checkpoint_id(ctx)
  if not ctx.is_chief:
    # Only the chief writes into model_dir; the other workers read its copy when complete and
    # made from the current pixel checkpoint (a stale one may still be there while it works).
    if not translated.is_complete(directory, produced_by):
      print(f'[task] waiting for the chief worker to translate the source set into '
            f'{directory}', flush=True)
      distribute.wait_for(lambda: translated.is_complete(directory, produced_by),
                          f'the chief worker to translate the source set into {directory} '
                          f'with pixel {produced_by["pixel_checkpoint"]}')
    print(f"[task] reading the chief worker's translated source set in {directory}", flush=True)
    return directory
  if translated.is_complete(directory, produced_by):
    return directory
  if translated.is_complete(directory):
    print(f'[task] {directory} was translated with another pixel checkpoint; translating again',
          flush=True)
  g_st = common.load_translator(ctx, needed_by='task')
  info = domains.domain_info(ctx.pair.source, ctx.data_dir)
  if ctx.is_segmentation:
    # Whole resized images, labels as the metrics see them (full resolution).
    datasets = {split: common.eval_dataset(ctx, ctx.pair.source, split)
                for split in ('train', 'test')}
  else:
    datasets = {split: pipeline.domain_dataset(
        ctx.pair.source, split, ctx.image_shape, batch_size=int(ctx.config.eval.batch_size),
        data_dir=ctx.data_dir, shuffle=False) for split in ('train', 'test')}
  translate = tf.function(lambda images: common.translate(ctx, g_st, images),
                          reduce_retracing=True)
  print(f'[task] translating {ctx.pair.source} with G_ST into {directory}', flush=True)
  translated.write(directory, translate, datasets, info.num_classes, info.class_names,
                   produced_by=produced_by, task=ctx.pair.task)
  return directory



def build(ctx, fresh=False, num_train=None):
  """(the `trainer.Stage`, its models): f_T and the supervised step on G_ST(source).

  f_T is new, or f_S's weights with `task.init_from=source`. `fresh` (the bench) always starts
  a new network and needs no finished stage; `num_train` is then the examples per epoch.
  """
  check_config(ctx.config)
  section = ctx.config.task
  with ctx.strategy.scope():
    classifier = (common.load_classifier(ctx, 'source', needed_by='task')
                  if section.init_from == 'source' and not fresh
                  else common.new_classifier(ctx))
  stage = common.supervised_stage(ctx, 'task', common.translated_source_spec(ctx), classifier,
                                  num_train)
  return stage, {'classifier': classifier}


def check_config(config):
  """Raises a UserError for a task setting no run can use (called before any stage trains)."""
  check_choice('--config.task.init_from', config.task.init_from, INIT_FROM)


def run(ctx):
  """Trains the pixel-only f_T; writes metrics.json (target_test_accuracy and friends) and the
  HParams summary."""
  check_config(ctx.config)  # before the translation, which takes a while
  ctx.require('pixel', needed_by='task')
  translate_source(ctx)
  # f_T's initial weights must not depend on whether this process translated (building G_ST
  # draws from the global seed) or found the translation done, e.g. when resuming after a kill.
  keras.utils.set_random_seed(ctx.seed)
  stage, networks = build(ctx)
  result = common.fit(ctx, stage)
  classifier, spec = networks['classifier'], common.translated_source_spec(ctx)
  metrics = common.write_stage_metrics(ctx, 'task', lambda: dict(
      common.test_metrics(ctx, classifier),
      **{ctx.score_key('translated_source_test'): common.score_on(ctx, classifier, spec)},
      trained_on=spec, initialised_from=ctx.config.task.init_from,
      **common.fit_summary(result)))
  return common.log_hparams(ctx, 'task', metrics)
