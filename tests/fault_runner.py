"""`python tests/fault_runner.py KIND N SEED ARGS...`: `python -m train.main ARGS` with one fault.

The process SIGKILLs itself (no clean-up, like a power cut or the OOM killer):
  time N    N seconds after start, wherever it is (during steps, evaluation, data preparation);
  save N    at a random moment within 50 ms of the start of its N-th checkpoint save;
  export N  at a random moment within 0.5 s of the start of its N-th SavedModel save.
Used by tests/test_all.py to check that a run killed anywhere resumes to the same result.
"""

import os
import random
import runpy
import signal
import sys
import threading


def _kill():
  os.kill(os.getpid(), signal.SIGKILL)


def _kill_during_nth_call(owner, name, n, max_delay, rng):
  original = getattr(owner, name)
  calls = [0]

  def wrapper(*args, **kwargs):
    calls[0] += 1
    if calls[0] == n:
      threading.Timer(rng.uniform(0.0, max_delay), _kill).start()
    return original(*args, **kwargs)

  setattr(owner, name, wrapper)


def main():
  kind, n, seed, args = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
  rng = random.Random(seed)
  if kind == 'time':
    timer = threading.Timer(n, _kill)
    timer.daemon = True
    timer.start()
  else:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    if kind == 'save':
      _kill_during_nth_call(tf.train.CheckpointManager, 'save', n, 0.05, rng)
    elif kind == 'export':
      _kill_during_nth_call(tf.saved_model, 'save', n, 0.5, rng)
    else:
      raise SystemExit(f'unknown fault {kind!r}')
  sys.argv = ['train.main'] + args
  runpy.run_module('train.main', run_name='__main__')


if __name__ == '__main__':
  main()
