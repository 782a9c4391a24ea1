"""`--stage=all` on a tiny config: every stage runs, and a rerun after a kill resumes."""

import pytest
import json
import signal
import subprocess
import sys
import time

from tests.conftest import REPO

# End-to-end, multi-process or benchmark: excluded from the fast tier (-m "not slow").
pytestmark = pytest.mark.slow

TINY = ['--config.model.generator_filters=8', '--config.model.discriminator_filters=8',
        '--config.source.epochs=1', '--config.source.batch_size=32',
        '--config.target_only.epochs=1', '--config.target_only.batch_size=32',
        '--config.pixel.epochs=1', '--config.pixel.batch_size=32',
        '--config.pixel.decay_epochs=0', '--config.task.epochs=1',
        '--config.task.batch_size=32', '--config.feature.batch_size=32',
        '--config.feature.learning_rate=1e-3', '--config.feature.discriminator_learning_rate=1e-3',
        '--config.train.checkpoint_every_steps=20', '--config.train.log_every_steps=20']


def test_all_runs_every_stage_and_resumes_after_feature_is_killed(tmp_path, offline_data_dir):
  base = [sys.executable, '-m', 'train.main', '--stage=all', f'--model_dir={tmp_path}',
          f'--data_dir={offline_data_dir}'] + TINY
  feature_checkpoints = tmp_path / 'feature' / 'checkpoints'
  # A long feature stage, killed as soon as it has written a checkpoint.
  process = subprocess.Popen(base + ['--config.feature.epochs=200'], cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  deadline = time.time() + 400
  while time.time() < deadline and process.poll() is None:
    if feature_checkpoints.exists() and any(
        p.name.endswith('.index') for p in feature_checkpoints.iterdir()):
      break
    time.sleep(0.2)
  output = process.stdout.read() if process.poll() is not None else ''
  assert process.poll() is None, f'the run ended before the feature stage: {output[-3000:]}'
  process.send_signal(signal.SIGKILL)
  process.wait()
  for stage in ('source', 'target_only', 'pixel', 'task'):
    assert (tmp_path / stage / 'metrics.json').exists()
  assert not (tmp_path / 'feature' / 'metrics.json').exists()

  result = subprocess.run(base + ['--config.feature.epochs=2'], cwd=REPO, capture_output=True,
                          text=True, timeout=400)
  assert result.returncode == 0, result.stderr[-3000:]
  out = result.stdout
  for stage in ('source', 'target_only', 'pixel', 'task'):
    assert f'[all] {stage}: already finished' in out
  assert '[feature] resumed from' in out
  assert (tmp_path / 'feature' / 'metrics.json').exists()
  exported = json.loads((tmp_path / 'export' / 'metrics.json').read_text())
  assert exported['path'] == str(tmp_path / 'export' / '1')
  assert (tmp_path / 'export' / '1' / 'saved_model.pb').exists()
  assert (tmp_path / 'export_translator' / '1' / 'saved_model.pb').exists()
  # The final table has every row the run produced.
  for row in ('| source only |', '| pixel only |', '| pixel+feat |', '| target only |'):
    assert row in out
