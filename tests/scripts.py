"""Running a test's Python snippet in a fresh interpreter (logical CPUs need a new process)."""

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_python(script, expect, timeout=240, argv=()):
  """Runs `script` (with `argv`) with the repo importable; fails unless stdout has `expect`."""
  env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL='3', CUDA_VISIBLE_DEVICES='')
  result = subprocess.run([sys.executable, '-c', script, *argv], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)
  assert expect in result.stdout, result.stderr[-3000:]
