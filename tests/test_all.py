"""`--stage=all` on a tiny config: every stage runs, and a run killed anywhere ends as one that
was never killed."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

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
        '--config.train.checkpoint_every_steps=10', '--config.train.log_every_steps=10',
        '--config.max_steps=20']


# Faults injected one after another into the same model_dir (tests/fault_runner.py): SIGKILL at
# some time into the run (during a step) and during the n-th checkpoint save. A `save` fault
# always hits a run that has that save left to do; a `time` fault hits if the run lasts that long
# (a whole run here takes several times as long). A kill during a SavedModel save and its rerun
# are tests/test_export.py's.
FAULTS = (('time', 18), ('save', 2))
# Wall-clock fields of metrics.json: the only ones allowed to differ.
_TIMINGS = ('train_seconds', 'examples_per_second', 'first_call_seconds')


def _command(model_dir, data_dir):
  return ['--stage=all', f'--model_dir={model_dir}', f'--data_dir={data_dir}'] + TINY


def _run(args, fault=None, seed=0):
  env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL='3', CUDA_VISIBLE_DEVICES='')
  prefix = ([sys.executable, os.path.join(REPO, 'tests', 'fault_runner.py'), fault[0],
             str(fault[1]), str(seed)] if fault else [sys.executable, '-m', 'train.main'])
  return subprocess.run(prefix + args, cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=900)


def _metrics(model_dir):
  found = {}
  for root, _, files in os.walk(model_dir):
    if 'metrics.json' in files:
      with open(os.path.join(root, 'metrics.json')) as f:
        payload = json.load(f)
      for key in _TIMINGS:
        payload.pop(key, None)
      found[os.path.relpath(root, model_dir)] = json.loads(
          json.dumps(payload).replace(str(model_dir), '<model_dir>'))
  return found


def _served(model_dir):
  """Every exported version's outputs on a fixed batch, by `export_root/version`."""
  images = tf.constant(np.random.default_rng(0).integers(0, 256, (4, 28, 28, 1), np.uint8))
  outputs = {}
  for root in ('export', 'export_translator'):
    for version in sorted(os.listdir(model_dir / root)):
      if version.isdigit():
        signature = tf.saved_model.load(str(model_dir / root / version)).signatures[
            'serving_default']
        outputs[f'{root}/{version}'] = {k: v.numpy() for k, v in signature(images=images).items()}
  return outputs


# Both runs are module fixtures and the checks small tests after them, each reported on its
# own (and see tests/conftest.py's LONGEST_MODULES on how xdist hands out long modules).
@pytest.fixture(scope='module')
def straight(tmp_path_factory, offline_data_dir):
  """A model_dir and the stdout of one uninterrupted `--stage=all` run into it."""
  model_dir = tmp_path_factory.mktemp('straight')
  result = _run(_command(model_dir, offline_data_dir))
  assert result.returncode == 0, result.stderr[-3000:]
  return model_dir, result.stdout


@pytest.fixture(scope='module')
def killed(tmp_path_factory, offline_data_dir):
  """A model_dir that every fault in FAULTS killed a run in, then finished by a last run."""
  model_dir = tmp_path_factory.mktemp('killed')
  hits = 0
  for seed, fault in enumerate(FAULTS):
    result = _run(_command(model_dir, offline_data_dir), fault=fault, seed=seed)
    assert result.returncode in (0, -9), (fault, result.stderr[-3000:])
    hits += result.returncode == -9
  final = _run(_command(model_dir, offline_data_dir))
  assert final.returncode == 0, final.stderr[-3000:]
  assert hits == len(FAULTS), f'only {hits} of {len(FAULTS)} faults hit a running pipeline'
  return model_dir


def test_all_prints_every_row_and_phase(straight):
  _, stdout = straight
  # The final table has every row the run produced.
  for row in ('| source only |', '| pixel only |', '| pixel+feat |', '| target only |'):
    assert row in stdout
  # Every long phase says what it is doing.
  for phase in ('[main] checking the data', '[source] starting: building the models',
                '[source] tracing and compiling the training step', '[eval] accuracy on',
                '[task] translating'):
    assert phase in stdout, phase


def test_all_killed_anywhere_ends_with_the_uninterrupted_runs_metrics(straight, killed):
  straight_dir, _ = straight
  assert _metrics(killed) == _metrics(straight_dir)


def test_all_killed_anywhere_exports_the_uninterrupted_runs_models(straight, killed):
  straight_dir, _ = straight
  assert (straight_dir / 'export' / '1' / 'saved_model.pb').exists()
  served, expected = _served(killed), _served(straight_dir)
  assert sorted(served) == sorted(expected) == ['export/1', 'export_translator/1']
  for version, outputs in expected.items():
    for name, value in outputs.items():
      np.testing.assert_array_equal(served[version][name], value, err_msg=f'{version} {name}')


def test_all_killed_anywhere_leaves_no_temporary_files(killed):
  leftovers = [os.path.join(root, name) for root, dirs, _ in os.walk(killed)
               for name in dirs if name.endswith('_temp') or name.startswith('.tmp')]
  assert not leftovers, leftovers
