"""`task`'s translated source set is reused only while it matches the pixel checkpoint.

Retraining `pixel` (even to the same step) must retranslate, or `task` and `feature` would train
on images from a generator that no longer exists; an unchanged checkpoint must not.

The pixel stages here are written, not trained (`conftest.pretend_finished_pixel`): the cache
depends only on the checkpoint G_ST is restored from, and a retrain "to the same step" is a
checkpoint of the same name holding other weights. That a real pixel run's G_ST is what `task`
translates with is tests/test_stages.py's `test_task_input_is_g_st_output`.
"""

import os
import shutil

import numpy as np
import pytest

from cycada_tf.data import pipeline
from cycada_tf.data import translated
from cycada_tf.stages import common
from cycada_tf.stages import task
from tests.conftest import make_context
from tests.conftest import pretend_finished_pixel
from tests.conftest import tiny_config

# Translates the whole UCI train split with G_ST: excluded from the fast tier (-m "not slow").
pytestmark = pytest.mark.slow


def finish_pixel(ctx, seed):
  """Replaces the pixel stage with a finished one whose G_ST is drawn from `seed`. Its
  checkpoint is `ckpt-1` every time, as a retrain to the same step reuses the old name."""
  shutil.rmtree(ctx.stage_dir('pixel'), ignore_errors=True)
  pretend_finished_pixel(ctx, seed)


@pytest.fixture(name='ctx')
def fixture_ctx(tmp_path, offline_data_dir):
  """A model_dir of its own with a finished pixel stage (tests retrain pixel and translate)."""
  ctx = make_context(tmp_path / 'model', offline_data_dir, tiny_config())
  finish_pixel(ctx, ctx.seed)
  return ctx


def translate(ctx, capsys):
  """Runs the chief's translation; returns (train images, whether it translated anew)."""
  capsys.readouterr()
  directory = task.translate_source(ctx)
  translated_now = '[task] translating' in capsys.readouterr().out
  return translated.read_all(directory, 'train')[0], translated_now


def test_unchanged_checkpoint_is_reused(ctx, capsys):
  first, translated_now = translate(ctx, capsys)
  assert translated_now
  record = os.path.join(common.translated_source_dir(ctx), 'train.tfrecord')
  mtime = os.stat(record).st_mtime_ns
  again, translated_now = translate(ctx, capsys)
  assert not translated_now
  assert os.stat(record).st_mtime_ns == mtime
  np.testing.assert_array_equal(first, again)


class _Waited(Exception):
  pass


def test_retrained_pixel_is_retranslated_by_the_chief_while_others_wait(ctx, capsys, monkeypatch):
  before, _ = translate(ctx, capsys)
  checkpoint_before = task.pixel_checkpoint_id(ctx)
  finish_pixel(ctx, seed=ctx.seed + 1)
  # Only the values tell the two apart: the case that a name-only cache key would miss.
  checkpoint_after = task.pixel_checkpoint_id(ctx)
  assert checkpoint_after['pixel_checkpoint'] == checkpoint_before['pixel_checkpoint']
  assert checkpoint_after['weights_sha256'] != checkpoint_before['weights_sha256']

  # A non-chief worker finds the set stale (the chief has not retranslated yet) and waits.
  with monkeypatch.context() as patch:
    patch.setattr(task.distribute, 'is_chief', lambda strategy: False)
    polls = []

    def wait_for(predicate, what):
      polls.append(predicate())
      raise _Waited(what)

    patch.setattr(task.distribute, 'wait_for', wait_for)
    with pytest.raises(_Waited):
      task.translate_source(ctx)
    assert polls == [False]

  # The chief translates again, with the new G_ST.
  after, translated_now = translate(ctx, capsys)
  assert translated_now
  assert np.abs(after.astype(int) - before.astype(int)).max() > 1
  g_st = common.load_translator(ctx, needed_by='test')
  images, _ = next(iter(pipeline.domain_dataset(ctx.pair.source, 'train', ctx.image_shape,
                                                batch_size=64, data_dir=ctx.data_dir)))
  expected = translated.to_uint8(g_st(images, training=False)).numpy()
  assert np.abs(after[:64].astype(int) - expected.astype(int)).max() <= 1
