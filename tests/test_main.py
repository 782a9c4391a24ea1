"""The command line: validation errors, config overrides, and resuming a killed run."""

import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO

# Each test starts train.main or train.inspect in a subprocess: excluded from the fast tier.
pytestmark = pytest.mark.slow


def run_main(*args, timeout=300):
  return subprocess.run([sys.executable, '-m', 'train.main', *args], cwd=REPO,
                        capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize('args, expected', [
    (['--stage=bogus'], "unknown --stage='bogus'; valid stages: source, target_only, pixel"),
    (['--dataset=nope'], "unknown dataset 'nope'"),
    (['--source=mnist'], '--target'),
])
def test_bad_flags_print_one_line_and_exit_2(args, expected, tmp_path):
  result = run_main(*args, f'--model_dir={tmp_path}')
  assert result.returncode == 2, result.stderr[-2000:]
  error_lines = [l for l in result.stderr.splitlines() if l.startswith('error: ')]
  assert len(error_lines) == 1 and expected in error_lines[0]
  assert 'Traceback' not in result.stderr


def test_missing_prerequisite_names_the_stage_to_run(tmp_path, offline_data_dir):
  result = run_main('--stage=task', f'--model_dir={tmp_path}', f'--data_dir={offline_data_dir}')
  assert result.returncode == 2
  assert 'run `python -m train.main --stage=pixel --dataset=uci_mnist' in result.stderr


@pytest.mark.slow
def test_killed_source_run_resumes_from_its_checkpoint(tmp_path, offline_data_dir):
  """Kill -9 mid-epoch after a checkpoint, rerun the same command: it resumes and finishes."""
  command = [sys.executable, '-m', 'train.main', '--stage=source', '--dataset=uci_mnist',
             f'--model_dir={tmp_path}', f'--data_dir={offline_data_dir}',
             '--config.source.epochs=40', '--config.source.batch_size=32',
             '--config.train.checkpoint_every_steps=30', '--config.train.log_every_steps=30']
  checkpoints = tmp_path / 'source' / 'checkpoints'
  process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
  deadline = time.time() + 240
  while time.time() < deadline and process.poll() is None:
    if checkpoints.exists() and any(p.name.endswith('.index') for p in checkpoints.iterdir()):
      break
    time.sleep(0.2)
  assert process.poll() is None, 'the run finished before it could be killed'
  process.send_signal(signal.SIGKILL)
  process.wait()
  assert not (tmp_path / 'source' / 'metrics.json').exists()

  result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  resumed = [l for l in result.stdout.splitlines() if 'resumed from' in l]
  assert resumed, result.stdout[-3000:]
  step = int(resumed[0].rsplit('at step ', 1)[1])
  assert 0 < step < 40 * 44  # a checkpoint mid-run, not the start or the end
  assert (tmp_path / 'source' / 'metrics.json').exists()
