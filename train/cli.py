"""What every command-line entry point shares: quiet logs, and one-line errors with exit code 2.

A `UserError` from anywhere below becomes `error: <message>` on stderr and exit code 2 — the
contract the README promises — instead of a traceback from deep inside TensorFlow.
"""

import sys

from absl import flags
from absl import logging


def run_command(argv, command, example_flag):
  """Runs `command()` for an absl `main(argv)`; returns its result or exits with code 2."""
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)
  if len(argv) > 1:
    print(f'error: unexpected arguments {argv[1:]}; flags look like {example_flag}.',
          file=sys.stderr)
    sys.exit(2)
  from cycada_tf.errors import UserError  # pylint: disable=g-import-not-at-top
  try:
    return command()
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
