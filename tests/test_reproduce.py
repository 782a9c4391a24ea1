"""`train.reproduce`'s commands per seed: the pipeline, then the ADDA baseline without task loss.

`train.reproduce` defines flags that `train.main` defines too, so it is imported in a subprocess.
"""

import json
import subprocess
import sys

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
