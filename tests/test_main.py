"""The command line: validation errors and missing prerequisites (resume: tests/test_all.py)."""

import subprocess
import sys

import pytest

from tests.conftest import REPO

# Each test starts train.main or train.inspect in a subprocess: excluded from the fast tier.
pytestmark = pytest.mark.slow


def run_main(*args, timeout=300):
  return subprocess.run([sys.executable, '-m', 'train.main', *args], cwd=REPO,
                        capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize('args, expected', [
    (['--stage=bogus'], "--stage='bogus' is unknown; valid: source, target_only, pixel"),
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
