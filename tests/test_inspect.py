"""`python -m train.inspect` end to end, as a user runs it."""

import pytest
import json
import subprocess
import sys

from PIL import Image

from tests.conftest import REPO as _REPO
from tests.conftest import image_folder

# Each test starts train.main or train.inspect in a subprocess: excluded from the fast tier.
pytestmark = pytest.mark.slow


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


def _custom_pair(tmp_path):
  """--source/--target flags: a 12×12 RGB source folder and a 20×20 grey target folder."""
  counts = {'train': 4, 'test': 2}
  return (f'--source={image_folder(tmp_path / "a", per_class=counts, size=12, mode="RGB")}',
          f'--target={image_folder(tmp_path / "b", per_class=counts, size=20, mode="L")}')


@pytest.mark.slow
def test_inspect_infers_a_folder_pairs_shape_and_a_flag_wins(tmp_path):
  """The image shape comes from the first folder's images except where a flag is given (the
  combinations are tests/test_pairs.py's, in-process): here the channels."""
  result = _inspect(*_custom_pair(tmp_path), '--config.data.channels=1',
                    f'--data_dir={tmp_path}', f'--out={tmp_path / "grid.png"}', '--samples=2')
  assert result.returncode == 0, result.stderr[-3000:]
  summary = json.loads(result.stdout.strip().splitlines()[-1])
  assert summary['source'] == {'train': 8, 'test': 4, 'classes': 2, 'shape': [12, 12, 1]}
  assert summary['target']['shape'] == [12, 12, 1]
  inferred = [l for l in result.stdout.splitlines() if 'inferred' in l]
  assert len(inferred) == 1 and '(12, 12, 1)' in inferred[0], result.stdout


@pytest.mark.slow
def test_main_infers_a_folder_pairs_shape_and_a_flag_wins(tmp_path):
  """train.main prints the shape it inferred and lets a flag win for its own dimension; it then
  stops at the missing prerequisite in one line, naming the command to run first."""
  source, target = _custom_pair(tmp_path)
  # A batch the 8-image folders can fill, so the data checks pass and the stage itself stops.
  result = subprocess.run(
      [sys.executable, '-m', 'train.main', '--stage=task', '--config.task.batch_size=4',
       source, target, '--config.data.image_size=16', f'--data_dir={tmp_path}',
       f'--model_dir={tmp_path / "run"}'],
      cwd=_REPO, capture_output=True, text=True, timeout=120, check=False)
  assert result.returncode == 2, result.stderr[-3000:]
  error_lines = [l for l in result.stderr.splitlines() if l.startswith('error: ')]
  assert len(error_lines) == 1 and "needs the finished 'pixel' stage" in error_lines[0]
  assert f'run `python -m train.main --stage=pixel {source} {target}' in error_lines[0]
  assert 'image shape (16, 16, 3), model_dir' in result.stdout
  inferred = [l for l in result.stdout.splitlines() if 'inferred' in l]
  assert len(inferred) == 1 and '(16, 16, 3)' in inferred[0], result.stdout
