"""What every command-line entry point shares: quiet logs, and one-line errors with exit code 2.

A `UserError` from anywhere below becomes `error: <message>` on stderr and exit code 2 — the
contract the README promises — instead of a traceback from deep inside TensorFlow.
"""

import sys

from absl import flags
from absl import logging


def define_pair_flags():
  """The flags that name a dataset pair and its data, spelled alike in every command."""
  flags.DEFINE_string('dataset', None, 'Dataset pair (default uci_mnist), e.g. svhn_mnist.')
  flags.DEFINE_string('source', None, 'Source domain of a custom pair: a catalog name or '
                      'folder:PATH. Use with --target instead of --dataset.')
  flags.DEFINE_string('target', None, 'Target domain of a custom pair.')
  flags.DEFINE_string('data_dir', None, 'TFDS data directory (default ~/tensorflow_datasets).')


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
