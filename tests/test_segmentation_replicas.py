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


def test_every_segmentation_stage_runs_on_two_replicas(tmp_path, scenes_data_dir):
  env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL='3', CUDA_VISIBLE_DEVICES='')
  model_dir = str(tmp_path / 'run')
  for stage, steps in EXPECTED_STEPS.items():
    command = [sys.executable, '-m', 'train.main', f'--stage={stage}',
               '--dataset=scenes_synthetic_real', f'--model_dir={model_dir}',
               f'--data_dir={scenes_data_dir}', '--cpu_replicas=2'] + TINY
    result = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert '2 replica(s)' in result.stdout
    with open(os.path.join(model_dir, OUTPUT_DIRS.get(stage, stage), 'metrics.json')) as f:
      metrics = json.load(f)
    assert metrics['steps'] == steps, stage
    assert 0.0 <= metrics['target_test_miou'] <= 1.0
