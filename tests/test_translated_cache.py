"""`task`'s translated source set is reused only while it matches the pixel checkpoint.

Retraining `pixel` (even to the same step) must retranslate, or `task` and `feature` would train
on images from a generator that no longer exists; an unchanged checkpoint must not.
"""

import os
import shutil

import numpy as np
import pytest

from cycada_tf import workflow
from cycada_tf.data import pipeline
from cycada_tf.data import translated
from cycada_tf.stages import common
from cycada_tf.stages import task
from tests.conftest import make_context
from tests.conftest import tiny_config

# Trains real stages end to end: excluded from the fast tier (-m "not slow").
pytestmark = pytest.mark.slow


@pytest.fixture(scope='module', name='trained_dir')
def fixture_trained_dir(tmp_path_factory, offline_data_dir):
  """A model_dir with two-step source and pixel stages, trained once for the module."""
  model_dir = tmp_path_factory.mktemp('trained')
  ctx = make_context(model_dir, offline_data_dir, tiny_config(max_steps=2))
  for stage in ('source', 'pixel'):
    workflow.run(stage, ctx)
  return model_dir


@pytest.fixture(name='ctx')
def fixture_ctx(trained_dir, tmp_path, offline_data_dir):
  """A copy of `trained_dir` of its own (tests retrain pixel and translate into it)."""
  model_dir = tmp_path / 'model'
  shutil.copytree(trained_dir, model_dir)
  return make_context(model_dir, offline_data_dir, tiny_config(max_steps=2))


def retrain_pixel(ctx, seed):
  """Replaces the pixel stage with one trained from another seed, to the same step."""
  shutil.rmtree(ctx.stage_dir('pixel'))
  ctx.config.seed = seed
  workflow.run('pixel', ctx)


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
  retrain_pixel(ctx, seed=ctx.seed + 1)  # once for both halves: a pixel retrain is the slow part

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
