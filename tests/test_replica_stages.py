"""Every trainable stage with `--cpu_replicas=2` (MirroredStrategy, one input pipeline).

Two checks, each past an epoch boundary and past a group of `train.epochs_per_iterator` epochs:
- `train.main` runs source, pixel, task and feature to the end; each metrics.json has exactly the
  configured number of steps. One stage is killed (SIGKILL) mid-run and resumed.
- The stages' own input, read through `trainer.epoch_iterator` as `fit` reads it, gives each
  epoch `steps_per_epoch` global batches without any example twice, and the smaller domain of
  a paired stage whole (its split less the last partial batch).
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO
from tests.conftest import run_python

pytestmark = pytest.mark.slow

# uci_mnist (1,437 UCI / 4,000 MNIST train images) with tiny networks: 3 epochs a stage, two
# epochs per iterator, so every run crosses both an epoch boundary and an iterator group.
TINY = ['--config.model.generator_filters=8', '--config.model.discriminator_filters=8',
        '--config.train.epochs_per_iterator=2', '--config.train.log_every_steps=10',
        '--config.train.checkpoint_every_steps=20', '--config.train.steps_per_call=5',
        '--config.source.epochs=3', '--config.source.batch_size=64',
        '--config.pixel.epochs=3',
        '--config.pixel.batch_size=64', '--config.pixel.epoch_length=shorter',
        '--config.pixel.decay_epochs=0', '--config.task.epochs=3', '--config.feature.epochs=3',
        # The gate always open, so the stop rule cannot end the stage before its last step.
        '--config.feature.gate_threshold=0.0', '--config.eval.batch_size=500']
# Steps: source 1437 // 64 = 22 per epoch; pixel and feature the smaller domain (UCI):
# 1437 // 64 = 22 and 1437 // 128 = 11; task the translated UCI set, 1437 // 128 = 11.
EXPECTED_STEPS = {'source': 66, 'pixel': 66, 'task': 33, 'feature': 33}


def _main(stage, model_dir, data_dir):
  return [sys.executable, '-m', 'train.main', f'--stage={stage}', '--dataset=uci_mnist',
          f'--model_dir={model_dir}', f'--data_dir={data_dir}', '--cpu_replicas=2'] + TINY


def _env():
  return dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL='3', CUDA_VISIBLE_DEVICES='')


def _kill_after_first_checkpoint(command, checkpoint_dir, timeout=300):
  """Starts `command`, SIGKILLs it once a checkpoint exists, and returns the step it had."""
  process = subprocess.Popen(command, cwd=REPO, env=_env(), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline and process.poll() is None:
    if os.path.isdir(checkpoint_dir) and any(n.endswith('.index')
                                             for n in os.listdir(checkpoint_dir)):
      process.send_signal(signal.SIGKILL)
      break
    time.sleep(0.05)
  process.wait()


@pytest.fixture(scope='module')
def replica_run(tmp_path_factory, offline_data_dir):
  model_dir = str(tmp_path_factory.mktemp('replicas'))
  for stage in ('source', 'pixel', 'task', 'feature'):
    if stage == 'pixel':  # killed after its first checkpoint (step 20), then resumed
      _kill_after_first_checkpoint(_main(stage, model_dir, offline_data_dir),
                                   os.path.join(model_dir, stage, 'checkpoints'))
      assert not os.path.exists(os.path.join(model_dir, stage, 'metrics.json'))
    result = subprocess.run(_main(stage, model_dir, offline_data_dir), cwd=REPO, env=_env(),
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
  return model_dir


@pytest.mark.parametrize('stage', sorted(EXPECTED_STEPS))
def test_stage_runs_every_step_on_two_replicas(replica_run, stage):
  with open(os.path.join(replica_run, stage, 'metrics.json')) as f:
    metrics = json.load(f)
  assert metrics['steps'] == EXPECTED_STEPS[stage]
  assert metrics['epochs_completed'] == 3
  assert metrics['stop_reason'] == 'completed all steps'


EPOCH_CHECK = r'''
import collections, functools, hashlib, sys
import numpy as np
import tensorflow as tf
from cycada_tf import distribute, models, trainer
from cycada_tf.data import pipeline
from cycada_tf.stages import common, feature, pixel
from tests import conftest as test_helpers

strategy = distribute.create_strategy('auto', cpu_replicas=2)
model_dir, data_dir = sys.argv[1], sys.argv[2]
config = test_helpers.tiny_config()
config.pixel.update(batch_size=64, epoch_length='shorter')
config.source.batch_size = 64
ctx = test_helpers.make_context(model_dir, data_dir, config)
ctx.strategy = strategy

def key(image):
  return hashlib.sha1(np.round(image * 127.5).astype(np.int16).tobytes()).hexdigest()

@functools.lru_cache(maxsize=None)
def split_counts(spec):
  """How often each image occurs in the domain's train split (read once per domain)."""
  dataset = pipeline.domain_dataset(spec, 'train', ctx.image_shape, batch_size=500,
                                    data_dir=data_dir)
  return collections.Counter(key(x) for images, _ in dataset for x in images.numpy())

def check(stage, domains):
  """domains: per input stream, (spec, whether each epoch must cover the whole split)."""
  steps, epochs = stage.steps_per_epoch, 3
  iterator = trainer.epoch_iterator(stage, strategy, 0, 0, epochs)
  for epoch in range(epochs):
    seen = [collections.Counter() for _ in domains]
    for _ in range(steps):
      batch = next(iterator)
      streams = batch if len(domains) == 2 else (batch,)
      for counter, (images, _) in zip(seen, streams):
        for local in strategy.experimental_local_results(images):
          counter.update(key(x) for x in local.numpy())
    for counter, (spec, whole) in zip(seen, domains):
      full = split_counts(spec)
      assert sum(counter.values()) == steps * stage.global_batch_size, (stage.name, epoch)
      assert not counter - full, f'{stage.name} epoch {epoch}: an example twice in {spec}'
      if whole:
        missing = sum((full - counter).values())
        assert missing < stage.global_batch_size, (stage.name, spec, epoch, missing)
  print('checked', stage.name, steps)

with strategy.scope():
  classifier = common.new_classifier(ctx)
check(common.supervised_stage(ctx, 'source', ctx.pair.source, classifier),
      [(ctx.pair.source, True)])
stage, _, _ = pixel.build_stage(ctx, classifier, with_samples=False)
check(stage, [(ctx.pair.source, True), (ctx.pair.target, False)])
spec = common.translated_source_spec(ctx)
with strategy.scope():
  f_t, encoder = common.new_classifier(ctx), common.new_classifier(ctx)
  discriminator = common.build_network(models.build_feature_discriminator(), (10,))
check(common.supervised_stage(ctx, 'task', spec, f_t), [(spec, True)])
stage, _ = feature.build_stage(ctx, f_t, encoder, discriminator, spec, 'feature')
check(stage, [(spec, True), (ctx.pair.target, False)])
print('OK')
'''


def test_each_epoch_sees_each_example_once_on_two_replicas(replica_run, offline_data_dir):
  run_python(EPOCH_CHECK, 'OK', timeout=600, argv=[replica_run, offline_data_dir])
