"""What every command-line entry point shares: quiet logs, and one-line errors with exit code 2.

Every mistake in the user's input becomes `error: <message>` on stderr and exit code 2 — the
contract the README promises — instead of a traceback from deep inside TensorFlow: a flag that
does not parse or does not exist (`parse_flags`, given to `app.run`), a `--config.<path>` that
names no setting, and a `UserError` from anywhere below. Ctrl-C prints one line saying what was
kept and how to resume, and exits with 130 (the shell's code for SIGINT).
"""

import difflib
import re
import shlex
import sys

from absl import app
from absl import flags
from absl import logging

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def define_pair_flags():
  """The flags that name a dataset pair and its data, spelled alike in every command."""
  flags.DEFINE_string('dataset', None, 'Dataset pair (default uci_mnist), e.g. svhn_mnist.')
  flags.DEFINE_string('source', None, 'Source domain of a custom pair: a catalog name or '
                      'folder:PATH. Use with --target instead of --dataset.')
  flags.DEFINE_string('target', None, 'Target domain of a custom pair.')
  flags.DEFINE_string('data_dir', None, 'TFDS data directory (default ~/tensorflow_datasets).')


def fail(message):
  """Prints `error: message` on stderr and exits with the user-error code."""
  print(f'error: {message}', file=sys.stderr)
  sys.exit(EXIT_USER_ERROR)


def define_config_file(name, default, help_text):
  """`config_flags.DEFINE_config_file`, failing in one line on a `--config.<path>` typo.

  ml_collections applies the command line's `--<name>.<path>=value` overrides to the default
  config as soon as the flag is defined (at import), so a path naming no setting raises there.
  """
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  try:
    return config_flags.DEFINE_config_file(name, default, help_text)
  except (AttributeError, KeyError) as e:
    fail(_unknown_config_setting(sys.argv, e))


def flag_value(argv, name):
  """The value of `--name=V` or `--name V` in `argv` (the last one wins), or None.

  For decisions that must be taken while flags are being defined, before absl parses them.
  """
  value = None
  for i, arg in enumerate(argv):
    if arg.startswith(f'--{name}='):
      value = arg.split('=', 1)[1]
    elif arg == f'--{name}' and i + 1 < len(argv):
      value = argv[i + 1]
  return value


def default_config_file(configs_dir, argv=None, default='uci_mnist'):
  """The config file `--config.<path>` overrides are checked against when the flag is defined:
  the `--dataset`'s own file, `segmentation.py` for a custom pair of segmentation domains, else
  `default`'s. Each pair's config has its own settings (segmentation's `data.crop_size`, say), so
  checking every command line against one file would refuse another family's settings.
  """
  import os  # pylint: disable=g-import-not-at-top
  argv = sys.argv if argv is None else argv
  dataset = flag_value(argv, 'dataset')
  name = default
  if dataset and os.path.exists(os.path.join(configs_dir, f'{dataset}.py')):
    name = dataset
  else:
    specs = [flag_value(argv, side) for side in ('source', 'target')]
    if any(specs):
      # Only for custom pairs: the domain layer imports TensorFlow, which `--help` should not.
      from cycada_tf.data import domains  # pylint: disable=g-import-not-at-top
      if any(spec and domains.is_segmentation(spec) for spec in specs):
        name = 'segmentation'
  return os.path.join(configs_dir, f'{name}.py')


def parse_flags(argv):
  """absl's flag parsing (`app.run(main, flags_parser=parse_flags)`), failing in one line.

  absl exits with code 1 and ml_collections raises a traceback for a `--config.<path>` naming
  no setting; both become one line and exit code 2 here.
  """
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    fail(f'{e}. See --helpshort for the flags.')
  except (AttributeError, KeyError) as e:  # ml_collections: an override of a missing key
    fail(_unknown_config_setting(argv, e))


def _unknown_config_setting(argv, error):
  """The message for a `--config.a.b=v` whose `b` (or `a`) the config does not have."""
  text = str(error).encode().decode('unicode_escape')
  missing = re.search(r"'(\w+)'", text)
  suggested = re.search(r'Did you mean "(\w+)"', text)
  missing = missing.group(1) if missing else text
  paths = [arg.split('=', 1)[0].lstrip('-') for arg in argv[1:]
           if arg.startswith('--config.') and missing in arg.split('=', 1)[0].split('.')]
  where = f'--{paths[0]}' if paths else f'--config...{missing}'
  hint = ''
  if suggested:
    hint = f'; did you mean {suggested.group(1)!r}?'
  else:
    close = difflib.get_close_matches(missing, _config_keys(), n=1)
    hint = f'; did you mean {close[0]!r}?' if close else ''
  return (f'{where}: the config has no setting {missing!r}{hint} The settings are listed in '
          f'configs/base.py (segmentation: configs/segmentation.py).')


def _config_keys():
  """Every key of the base configs (both families), for suggestions."""
  from configs import base  # pylint: disable=g-import-not-at-top
  from configs import segmentation  # pylint: disable=g-import-not-at-top
  keys = set()

  def walk(node):
    for key, value in node.items():
      keys.add(key)
      if hasattr(value, 'items'):
        walk(value)

  walk(base.get_config())
  walk(segmentation.get_config())
  return sorted(keys)


def resume_command():
  """The command line this process was started with, to rerun after an interruption."""
  return 'python -m ' + ' '.join(shlex.quote(a) for a in [_module_name()] + sys.argv[1:])


def _module_name():
  main = sys.modules.get('__main__')
  spec = getattr(main, '__spec__', None)
  return spec.name if spec is not None else sys.argv[0]


def run_command(argv, command, example_flag):
  """Runs `command()` for an absl `main(argv)`; returns its result or exits with code 2."""
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)
  if len(argv) > 1:
    fail(f'unexpected arguments {argv[1:]}; flags look like {example_flag}.')
  from cycada_tf.errors import UserError  # pylint: disable=g-import-not-at-top
  try:
    return command()
  except UserError as e:
    fail(e)
  except KeyboardInterrupt as e:
    # `trainer.Interrupted` says which checkpoint was kept; elsewhere (data preparation,
    # evaluation, export) the finished stages are what is kept.
    kept = str(e) or ('Finished stages (those with a metrics.json) are kept; an unfinished '
                      'stage resumes from its last checkpoint')
    print(f'interrupted: {kept}. Resume with: {resume_command()}', file=sys.stderr)
    sys.exit(EXIT_INTERRUPTED)


def run_main(main):
  """`app.run(main)` with `parse_flags`: what every entry point's `__main__` calls."""
  app.run(main, flags_parser=parse_flags)
