"""Look at a pair's data before training: sizes, classes, and what the model will actually see.

  python -m train.inspect --dataset=uci_mnist
  python -m train.inspect --source=folder:/data/a --target=folder:/data/b
  python -m train.inspect --source=folder:/data/a --target=mnist \
      --config.data.image_size=28 --config.data.channels=1

A custom pair gets the shape train.main gives it (`pairs.custom_image_shape`): each of
`--config.data.image_size`/`--config.data.channels` that is passed, the rest from the first
folder domain's images (printed), or configs/base.py's default for catalog domains. On a
registered pair the two flags preview another size. `--image_size`/`--channels` are deprecated
spellings of the same flags.

Writes a PNG grid of preprocessed samples (one row per domain) and prints, as its last line, one
JSON object with each domain's split sizes, class count and post-preprocessing shape, so scripts
can check a dataset without parsing prose.
"""

import dataclasses
import json
import re
import sys

from absl import flags
import numpy as np
from PIL import Image

from configs import base
from cycada_tf.data import domains
from cycada_tf.data import pairs
from cycada_tf.data import pipeline
from cycada_tf.errors import check_positive
from train import cli

FLAGS = flags.FLAGS
# Each sample is enlarged to at least this many pixels so 16×16 digits are visible.
_MIN_CELL = 64
_MARGIN = 4


def _define_flags():
  """Defined only when run as a program, so importing this module never clashes with train.main."""
  cli.define_pair_flags()
  # Spelled as in train.main, so one command line works for both.
  flags.DEFINE_integer('config.data.image_size', None, 'Image height and width (default: a '
                       'custom pair\'s folder images, else configs/base.py; a registered pair\'s).')
  flags.DEFINE_integer('config.data.channels', None, 'Image channels, 1 or 3 (default as for '
                       '--config.data.image_size).')
  flags.DEFINE_integer('image_size', None, 'Deprecated: use --config.data.image_size.')
  flags.DEFINE_integer('channels', None, 'Deprecated: use --config.data.channels.')
  flags.DEFINE_string('out', None, 'PNG to write (default: inspect_<pair name>.png).')
  flags.DEFINE_integer('samples', 8, 'Samples shown per domain.')


def pair_from_flags(dataset, source, target, image_size, channels):
  """The pair the flags name; `image_size`/`channels` (None: not given) override its shape."""
  if dataset:
    pair = pairs.resolve_pair(dataset, source, target)
    height, width, depth = pair.image_shape
    shape = pairs.check_image_shape((image_size or height, image_size or width, channels or depth))
    return dataclasses.replace(pair, image_shape=shape)
  data = base.get_config().data  # what train.main's config gives a custom pair
  default = (data.image_size, data.image_size, data.channels)
  pairs.resolve_pair(None, source, target, image_shape=default)  # checks the specs first
  shape, note = pairs.custom_image_shape(source, target, image_size, channels, default=default)
  if note:
    print(note, flush=True)
  return pairs.resolve_pair(None, source, target, image_shape=shape)


def summarize(pair, data_dir):
  """{'source': {...}, 'target': {...}} with split sizes, classes and the preprocessed shape."""
  infos = {role: domains.domain_info(getattr(pair, role), data_dir)
           for role in ('source', 'target')}
  pairs.check_compatible(infos['source'], infos['target'])
  return {role: {'train': info.num_examples['train'], 'test': info.num_examples['test'],
                 'classes': info.num_classes, 'shape': list(pair.image_shape)}
          for role, info in infos.items()}


def sample_rows(pair, data_dir, samples):
  """One float32 array [samples, H, W, C] in [-1, 1] per domain, from a seeded shuffle of train."""
  rows = []
  for spec in (pair.source, pair.target):
    dataset = pipeline.domain_dataset(spec, 'train', pair.image_shape, batch_size=samples,
                                      data_dir=data_dir, shuffle=True, seed=0, cache=False,
                                      shuffle_buffer=1000)
    images, _ = next(iter(dataset))
    rows.append(images.numpy())
  return rows


def grid_image(rows):
  """An RGB PIL image: one row per domain, samples enlarged and separated by a margin."""
  height, width = rows[0].shape[1:3]
  scale = max(1, -(-_MIN_CELL // max(height, width)))
  cell_h, cell_w = height * scale, width * scale
  columns = max(len(row) for row in rows)
  canvas = np.full((_MARGIN + len(rows) * (cell_h + _MARGIN),
                    _MARGIN + columns * (cell_w + _MARGIN), 3), 255, np.uint8)
  for r, row in enumerate(rows):
    for c, image in enumerate(row):
      pixels = np.round((np.clip(image, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)
      pixels = np.broadcast_to(pixels, (height, width, 3))
      pixels = pixels.repeat(scale, axis=0).repeat(scale, axis=1)
      top, left = _MARGIN + r * (cell_h + _MARGIN), _MARGIN + c * (cell_w + _MARGIN)
      canvas[top:top + cell_h, left:left + cell_w] = pixels
  return Image.fromarray(canvas)


def default_out(pair):
  return 'inspect_' + re.sub(r'[^A-Za-z0-9_.-]+', '_', pair.name) + '.png'


def run(dataset, source, target, image_size, channels, data_dir, out, samples):
  """Writes the grid and returns the summary dict (raises UserError on bad input)."""
  check_positive('--samples', samples, fix='pass --samples=8.')
  pair = pair_from_flags(dataset, source, target, image_size, channels)
  summary = summarize(pair, data_dir)
  out = out or default_out(pair)
  grid_image(sample_rows(pair, data_dir, samples)).save(out, format='PNG')
  print(f'{pair.name}: {pair.description} Wrote {out}')
  return summary


def _shape_flag(name):
  """--config.data.NAME, or its deprecated spelling --NAME (with a note saying so)."""
  value = FLAGS[f'config.data.{name}'].value
  if value is None and FLAGS[name].value is not None:
    print(f'note: --{name} is deprecated; pass --config.data.{name} (as train.main takes it).',
          file=sys.stderr, flush=True)
    value = FLAGS[name].value
  return value


def main(argv):
  summary = cli.run_command(
      argv, lambda: run(FLAGS.dataset, FLAGS.source, FLAGS.target, _shape_flag('image_size'),
                        _shape_flag('channels'), FLAGS.data_dir, FLAGS.out, FLAGS.samples),
      example_flag='--dataset=uci_mnist')
  print(json.dumps(summary))


if __name__ == '__main__':
  _define_flags()
  cli.run_main(main)
