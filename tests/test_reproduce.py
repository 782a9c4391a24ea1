"""`train.reproduce`'s commands per seed: the pipeline, then the ADDA baseline without task loss.

`train.reproduce` defines flags that `train.main` defines too, so it is imported in a subprocess.
"""

import json
import os
import signal
import subprocess
import sys
import time

from tests.conftest import REPO

_PRINT_COMMANDS = '''
import json, sys
from train import reproduce
print(json.dumps(reproduce.seed_commands('uci_mnist', 'runs/x/seed_1', 1, sys.argv[1:])))
'''


def _commands(*extra_args):
  result = subprocess.run([sys.executable, '-c', _PRINT_COMMANDS, *extra_args], cwd=REPO,
                          capture_output=True, text=True, timeout=120, check=True)
  return [(done, command[1:]) for done, command in json.loads(result.stdout)]


def test_pipeline_then_adda_without_the_feature_stages_task_loss():
  (first_done, pipeline), (adda_done, adda) = _commands('--config.source.epochs=2')
  assert first_done is None and '--stage=all' in pipeline and '--seed=1' in pipeline
  assert pipeline[-1] == '--config.source.epochs=2'
  assert adda_done == 'feature_only'
  assert adda[adda.index('--stage=feature'):] == [
      '--stage=feature', '--config.feature.from_stage=source', '--config.feature.task_weight=0',
      '--config.source.epochs=2']  # the user's arguments last, so they win


_RUN_CHILD = '''
import sys
from train import reproduce
print('CODE', reproduce.run_child([sys.executable, '-c', sys.argv[1]]), flush=True)
'''
_SLEEPER = '''
import os, sys, time
with open(os.environ['PID_FILE'], 'w') as f:
  f.write(str(os.getpid()))
time.sleep(120)
'''


def test_a_stopped_reproduction_stops_its_seed(tmp_path):
  """SIGTERM to `train.reproduce` reaches the running `train.main` (it used to keep training a
  seed alone, beside the run that replaced it)."""
  pid_file = tmp_path / 'child.pid'
  parent = subprocess.Popen([sys.executable, '-c', _RUN_CHILD, _SLEEPER], cwd=REPO,
                            env=dict(os.environ, PID_FILE=str(pid_file)),
                            stdout=subprocess.PIPE, text=True)
  for _ in range(300):
    if pid_file.exists() and pid_file.read_text():
      break
    time.sleep(0.1)
  child = int(pid_file.read_text())
  parent.send_signal(signal.SIGTERM)
  output, _ = parent.communicate(timeout=60)
  assert f'CODE {-signal.SIGTERM}' in output
  time.sleep(0.2)
  try:
    os.kill(child, 0)
    alive = True
  except ProcessLookupError:
    alive = False
  assert not alive
