"""The segmentation steps with `--cpu_replicas=2` (MirroredStrategy, one input pipeline).

`train.main` runs the two segmentation-specific steps, source and feature (as feature only,
from f_S: `task` is the source step on other data, and the pixel step is the digits' on other
crops, tested on two replicas in tests/test_replica_stages.py) on the offline scene pair (48 train
scenes per domain, `conftest.scenes_data_dir`) across epoch boundaries and, with one epoch per
iterator, across iterator groups; every metrics.json must have exactly the configured steps.
"""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow

TINY = ['--config.data.crop_size=(32, 64)', '--config.model.generator_filters=4',
        '--config.model.discriminator_filters=4', '--config.train.epochs_per_iterator=1',
        '--config.train.log_every_steps=4', '--config.train.checkpoint_every_steps=8',
        '--config.train.steps_per_call=2', '--config.train.monitor_every_epochs=0',
        '--config.source.epochs=2', '--config.source.batch_size=8',
        '--config.pixel.epochs=2', '--config.pixel.batch_size=8', '--config.pixel.decay_epochs=0',
        '--config.pixel.crop_size=(32, 32)', '--config.feature.epochs=2',
        '--config.feature.batch_size=8', '--config.feature.from_stage=source',
        # The gate always open, so the stop rule cannot end the stage before its last step.
        '--config.feature.gate_threshold=-1.0', '--config.eval.batch_size=8']
# 48 scenes a domain: source 6 batches of 8 an epoch, feature 6 pairs.
EXPECTED_STEPS = {'source': 12, 'feature': 12}
OUTPUT_DIRS = {'feature': 'feature_only'}


@pytest.fixture(scope='module')
def runs(tmp_path_factory, scenes_data_dir):
  """Each stage's stdout and metrics.json, run in turn into one model_dir on two replicas.

  One fixture and small tests after it, each reported on its own (and see tests/conftest.py's
  LONGEST_MODULES on how xdist hands out long modules)."""
  env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL='3', CUDA_VISIBLE_DEVICES='')
  model_dir = str(tmp_path_factory.mktemp('seg_replicas'))
  found = {}
  for stage in EXPECTED_STEPS:
    command = [sys.executable, '-m', 'train.main', f'--stage={stage}',
               '--dataset=scenes_synthetic_real', f'--model_dir={model_dir}',
               f'--data_dir={scenes_data_dir}', '--cpu_replicas=2'] + TINY
    result = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    with open(os.path.join(model_dir, OUTPUT_DIRS.get(stage, stage), 'metrics.json')) as f:
      found[stage] = result.stdout, json.load(f)
  return found


def test_every_stage_ran_on_two_replicas(runs):
  for stage, (stdout, _) in runs.items():
    assert '2 replica(s)' in stdout, stage


@pytest.mark.parametrize('stage', sorted(EXPECTED_STEPS))
def test_stage_runs_every_step_on_two_replicas(runs, stage):
  _, metrics = runs[stage]
  assert metrics['steps'] == EXPECTED_STEPS[stage]
  assert 0.0 <= metrics['target_test_miou'] <= 1.0
