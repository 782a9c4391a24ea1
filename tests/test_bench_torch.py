"""`train.bench_torch`: TF's step beside a PyTorch eager one, and its message without torch.

Both run the script in a subprocess, as users run it. torch is not a dependency of the package:
the run test is skipped without it, the missing-torch test shadows it with a module that raises.
"""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO


def _bench_torch(*args, env=None, timeout=300):
  return subprocess.run([sys.executable, '-m', 'train.bench_torch', *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_source_run_reports_both_frameworks_with_matching_parameter_counts():
  pytest.importorskip('torch')
  result = _bench_torch('--stage=source', '--steps=2', '--warmup=1',
                        '--config.source.batch_size=16')
  assert result.returncode == 0, result.stderr[-3000:]
  lines = result.stdout.strip().splitlines()
  assert len(lines) == 1, result.stdout  # one JSON line, nothing else on stdout
  out = json.loads(lines[0])
  for key in ('tf_examples_per_second', 'torch_examples_per_second', 'tf_over_torch',
              'tf_over_torch_windows', 'threads', 'torch', 'tensorflow', 'cpu_flags',
              'tf_kernels', 'param_counts', 'param_counts_match'):
    assert key in out, key
  assert out['stage'] == 'source' and out['pair'] == 'uci_mnist'
  assert out['global_batch_size'] == 16 and out['timed_steps'] == 2
  assert out['tf_examples_per_second'] > 0 and out['torch_examples_per_second'] > 0
  assert len(out['tf_over_torch_windows']) == 1
  assert out['tf_over_torch'] == pytest.approx(
      out['tf_examples_per_second'] / out['torch_examples_per_second'], rel=1e-6)
  assert out['param_counts_match']
  assert out['param_counts'] == {'classifier': {'tf': 431080, 'torch': 431080}}  # LeNet
  assert out['tf_metrics_finite'] and out['torch_metrics_finite']
  assert isinstance(out['cpu_flags'], list) and out['threads'] >= 1


@pytest.mark.slow
def test_without_torch_one_line_with_the_install_command_and_exit_code_2(tmp_path):
  # A `torch` module that fails to import, ahead of any installed one on the path.
  (tmp_path / 'torch.py').write_text('raise ImportError("No module named torch")\n')
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), REPO]),
             TF_CPP_MIN_LOG_LEVEL='3')
  result = _bench_torch('--stage=source', '--steps=1', env=env, timeout=120)
  assert result.returncode == 2, result.stderr[-3000:]
  assert result.stdout == ''
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1, result.stderr
  assert 'torch is not installed' in lines[0]
  assert 'pip install torch==2.13.0' in lines[0]
