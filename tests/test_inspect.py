"""`python -m train.inspect` end to end, as a user runs it."""

import json
import os
import subprocess
import sys

from PIL import Image

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _inspect(*args):
  return subprocess.run([sys.executable, '-m', 'train.inspect', *args], cwd=_REPO,
                        capture_output=True, text=True, timeout=120, check=False)


def test_inspect_offline_pair(offline_data_dir, tmp_path):
  out = tmp_path / 'grid.png'
  result = _inspect('--dataset=uci_mnist', f'--data_dir={offline_data_dir}', f'--out={out}',
                    '--samples=5')
  assert result.returncode == 0, result.stderr[-3000:]
  summary = json.loads(result.stdout.strip().splitlines()[-1])
  assert summary == {
      'source': {'train': 1437, 'test': 360, 'classes': 10, 'shape': [28, 28, 1]},
      'target': {'train': 4000, 'test': 1000, 'classes': 10, 'shape': [28, 28, 1]},
  }
  with Image.open(out) as grid:
    width, height = grid.size
  assert width > height > 2 * 28  # Two rows of five enlarged samples.


def test_inspect_user_error_exits_2(tmp_path):
  result = _inspect('--dataset=uci_mnist', '--source=mnist', f'--data_dir={tmp_path}')
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1].startswith('error: both --dataset')
