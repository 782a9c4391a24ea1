"""Checks made before any stage does work, so that bad input fails in a second, not in an hour.

Everything here raises `UserError` (one line, exit code 2 at the command line) before the first
training step: a `--model_dir` that cannot be written, settings that contradict the ones the
model_dir was trained with, two domains whose classes differ, more classes than the network has,
a split a stage will read that is missing or empty, and a training split smaller than one batch.

The settings a model_dir was trained with live beside it in `config.json` (`save_settings`).
A later command on the same model_dir starts from them (`restore_settings`), so a custom pair's
image shape or a changed network width need not be repeated on every command, and a command
line that contradicts them on a setting every stage shares is refused instead of failing deep in
a checkpoint restore with mismatched shapes.
"""

import json
import os
import tempfile

from cycada_tf.data import domains
from cycada_tf.errors import UserError

SETTINGS_FILE = 'config.json'
# Settings every stage's models depend on: changing one after a stage trained would make its
# checkpoint unloadable (shapes) or mix two experiments in one model_dir.
SHARED_SETTINGS = ('seed', 'data.image_size', 'data.channels', 'model.')
# Stages that train a classifier on one labelled domain's train split without repeating it
# (`common.supervised_stage`), and the domain each reads ('translated' is G_ST(source), which
# has the source's size).
_SUPERVISED_STAGES = {'source': 'source', 'target_only': 'target', 'task': 'source'}
_TRAINING_STAGES = ('source', 'target_only', 'pixel', 'task', 'feature', 'all')


def check_model_dir(model_dir, create=True):
  """Creates `model_dir` if needed and proves it writable, or raises a UserError.

  `create=False` only refuses a file: with several workers only the chief writes into
  model_dir (the others save to temporary directories), so only it creates the directory.
  """
  if os.path.exists(model_dir) and not os.path.isdir(model_dir):
    raise UserError(f'--model_dir={model_dir} is a file, not a directory. Fix: pass a '
                    'directory path (it is created if missing).')
  if not create:
    return
  try:
    os.makedirs(model_dir, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=model_dir, prefix='.write-test-'):
      pass
  except OSError as e:
    raise UserError(f'--model_dir={model_dir} is not writable ({e.strerror or e}). Fix: pass '
                    'a directory you can write to.') from None


def flat_settings(node, prefix=''):
  """{'a.b': value} for every non-dict value of a nested dict or ConfigDict."""
  leaves = {}
  for key, value in node.items():
    path = f'{prefix}{key}'
    if hasattr(value, 'items'):
      leaves.update(flat_settings(value, path + '.'))
    else:
      leaves[path] = value
  return leaves


def _is_shared(path):
  return any(path == s or (s.endswith('.') and path.startswith(s)) for s in SHARED_SETTINGS)


def _settings_path(model_dir):
  return os.path.join(model_dir, SETTINGS_FILE)


def read_settings(model_dir):
  """The saved {'pair': {...}, 'config': {...}} of `model_dir`, or None."""
  path = _settings_path(model_dir)
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError) as e:
    raise UserError(f'{path} is unreadable ({e}). Fix: restore it, or delete it to take the '
                    'settings from the command line.') from None


def restore_settings(config, pair, model_dir, explicit):
  """Takes every setting `model_dir` was trained with that the command line did not give.

  Args:
    config: the ConfigDict from the config file and the command line; updated in place.
    pair: the `pairs.Pair` the command line names.
    model_dir: the run's directory.
    explicit: the dotted config paths the command line set (all of them for `--config=FILE`),
      plus 'seed' if `--seed` was given.

  Returns:
    The saved pair's image shape for a custom pair (None if nothing was saved).

  Raises:
    UserError: if the command line names another pair, or sets a shared setting (seed, image
      shape, network) to another value than the one saved.
  """
  saved = read_settings(model_dir)
  if saved is None:
    return None
  path = _settings_path(model_dir)
  saved_pair = saved.get('pair', {})
  if saved_pair.get('name') != pair.name:
    raise UserError(f'{model_dir} holds a run of pair {saved_pair.get("name")!r} ({path}), not '
                    f'{pair.name!r}. Fix: pass that pair, or another --model_dir.')
  current = flat_settings(config)
  for key, value in sorted(flat_settings(saved.get('config', {})).items()):
    if key not in current:
      continue  # a setting this version no longer has
    if key in explicit:
      if _is_shared(key) and not _same(current[key], value):
        flag = '--seed' if key == 'seed' else f'--config.{key}'
        raise UserError(f'{flag}={current[key]!r} contradicts {value!r}, the value {model_dir} '
                        f'was trained with ({path}). Fix: drop the flag to continue that run, '
                        'or pass another --model_dir for a new one.')
      continue
    _set(config, key, value, current[key])
  return tuple(saved_pair['image_shape']) if saved_pair.get('image_shape') else None


def _same(a, b):
  if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
    return list(a) == list(b)
  return a == b


def _set(config, key, value, like):
  *parents, leaf = key.split('.')
  node = config
  for part in parents:
    node = node[part]
  if isinstance(like, tuple) and isinstance(value, list):
    value = tuple(value)
  elif isinstance(like, float) and isinstance(value, int) and not isinstance(value, bool):
    value = float(value)
  node[leaf] = value


def save_settings(config, pair, model_dir):
  """Writes `<model_dir>/config.json`: the pair and every setting of this command."""
  from cycada_tf import trainer  # pylint: disable=g-import-not-at-top
  trainer.write_json_atomically(_settings_path(model_dir), {
      'pair': {'name': pair.name, 'source': pair.source, 'target': pair.target,
               'image_shape': list(pair.image_shape)},
      'config': config.to_dict(),
  })


def check_data(config, pair, data_dir, stage, explicit=()):
  """Checks the data `stage` reads; sets a custom pair's class count from its data.

  Raises a UserError naming every problem's fix before any training: domains with different
  class names, more classes than `model.num_classes` was explicitly set to, a missing or empty
  train or test split, a training split smaller than one batch.
  """
  if stage not in _TRAINING_STAGES:
    return
  from cycada_tf.data import pairs  # pylint: disable=g-import-not-at-top
  for spec in (pair.source, pair.target):
    if spec.startswith(domains.SEG_FOLDER_PREFIX):
      domains.check_seg_folder(spec)
  source, target = (domains.domain_info(spec, data_dir) for spec in (pair.source, pair.target))
  pairs.check_compatible(source, target)
  classes = source.num_classes
  if classes != int(config.model.num_classes):
    if 'model.num_classes' in explicit or not pair.name.startswith('custom:'):
      raise UserError(
          f'{pair.source} and {pair.target} have {classes} classes but '
          f'--config.model.num_classes={config.model.num_classes}. Fix: pass '
          f'--config.model.num_classes={classes}, or use domains with '
          f'{config.model.num_classes} classes.')
    print(f'[main] {classes} classes in {pair.source} and {pair.target}: '
          f'model.num_classes = {classes}', flush=True)
    config.model.num_classes = classes
  for info in (source, target):
    empty = [split for split in ('train', 'test') if not info.num_examples.get(split)]
    if empty:
      where = (f'{info.spec[len(domains.FOLDER_PREFIX):]}/{empty[0]}/<class>/<image>'
               if info.spec.startswith(domains.FOLDER_PREFIX) else f'the {empty[0]} split')
      raise UserError(f'domain {info.spec} has no {" or ".join(empty)} images, and every stage '
                      f'trains on train and reports accuracy on test. Fix: add {where}.')
  sizes = {'source': source.num_examples['train'], 'target': target.num_examples['train']}
  stages = _SUPERVISED_STAGES if stage == 'all' else {
      k: v for k, v in _SUPERVISED_STAGES.items() if k == stage}
  small = [(name, sizes[domain], int(config[name].batch_size))
           for name, domain in stages.items() if sizes[domain] < int(config[name].batch_size)]
  if small:
    found = ', '.join(f'{name} reads {size} images, fewer than its batch_size {batch}'
                      for name, size, batch in small)
    fix = ' '.join(f'--config.{name}.batch_size={size}' for name, size, _ in small)
    raise UserError(f'a training split is smaller than one batch ({found}). Fix: pass {fix} '
                    '(or add images).')
