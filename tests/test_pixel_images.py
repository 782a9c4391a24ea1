"""The pixel stage's TensorBoard translation grid: written early, periodically, and at the end.

A run shorter than `image_every_steps` must still show the user a translation, so the grid is
logged at the first log step and the final step as well as every `image_every_steps`.
"""

import pytest
import os

import tensorflow as tf

from cycada_tf import trainer
from cycada_tf.stages import common
from cycada_tf.stages import pixel
from tests.conftest import make_context
from tests.conftest import tiny_config

# Trains real stages end to end: excluded from the fast tier (-m "not slow").
pytestmark = pytest.mark.slow


def image_steps(event_dir, tag='translations'):
  """The steps at which the image summary `tag` was written, in order."""
  steps = []
  for name in sorted(os.listdir(event_dir)):
    for record in tf.data.TFRecordDataset(os.path.join(event_dir, name)):
      event = tf.compat.v1.Event.FromString(record.numpy())
      steps += [event.step for value in event.summary.value if value.tag == tag]
  return sorted(steps)


def fit_pixel(tmp_path, data_dir, max_steps, image_every_steps):
  """A tiny pixel run (untrained f_S: only the logging matters) into tmp_path/pixel."""
  config = tiny_config(max_steps=max_steps)
  config.train.update(log_every_steps=5, checkpoint_every_steps=100, steps_per_call=5)
  config.pixel.image_every_steps = image_every_steps
  ctx = make_context(tmp_path, data_dir, config)
  stage, _, _ = pixel.build_stage(ctx, common.new_classifier(ctx))
  trainer.fit(stage, ctx.stage_dir('pixel'), ctx.strategy,
              trainer.TrainConfig.from_config(config.train))
  return image_steps(os.path.join(ctx.stage_dir('pixel'), 'train'))


def test_writes_first_every_and_last(tmp_path, offline_data_dir):
  # Log steps 5, 10, 15, 20, 23: the first (before any multiple of 10, as a run shorter than
  # image_every_steps would end), each multiple of 10, and the final step (not a multiple).
  assert fit_pixel(tmp_path, offline_data_dir, max_steps=23, image_every_steps=10) == [
      5, 10, 20, 23]
