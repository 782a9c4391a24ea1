"""USPS digits as Hastie et al. distribute them (docs/method.md §3): 7,291 train / 2,007 test.

Each line of `zip.train` / `zip.test` is one 16×16 image: the label as a float (`6.0000`) and 256
grey values in [-1, 1], whitespace separated. The files are read from the manual dir when the
user put them there (machines without internet), otherwise downloaded.
"""

import gzip
import os

import numpy as np
import tensorflow_datasets as tfds

from cycada_tf.data.builders import base

URL = 'https://hastie.su.domains/ElemStatLearn/datasets/'
FILES = {'train': 'zip.train', 'test': 'zip.test'}
SIDE = 16

_GZIP_MAGIC = b'\x1f\x8b'


def read_text(path):
  """Returns the file's text, gunzipping it when it starts with the gzip magic bytes.

  Decided by content, not by name, because browsers and mirrors often keep or drop `.gz`
  without changing the bytes.
  """
  with open(path, 'rb') as f:
    raw = f.read()
  if raw[:2] == _GZIP_MAGIC:
    raw = gzip.decompress(raw)
  return raw.decode('ascii')


def parse(text, name='<text>'):
  """Parses Hastie's format into (uint8 images [N, 16, 16, 1], int64 labels [N]).

  Values in [-1, 1] map to 0..255 by (v + 1) / 2 * 255, rounded; malformed lines raise
  ValueError naming the file and line so a truncated download is easy to spot.
  """
  images, labels = [], []
  for line_number, line in enumerate(text.splitlines(), start=1):
    fields = line.split()
    if not fields:
      continue
    if len(fields) != 1 + SIDE * SIDE:
      raise ValueError(f'{name}:{line_number}: expected 257 numbers (label + 256 pixels), '
                       f'found {len(fields)}')
    label = float(fields[0])
    if label != int(label) or not 0 <= label <= 9:
      raise ValueError(f'{name}:{line_number}: label {fields[0]} is not a digit 0..9')
    labels.append(int(label))
    images.append(np.asarray(fields[1:], np.float64))
  if not labels:
    raise ValueError(f'{name}: no images found')
  values = np.clip(np.stack(images), -1.0, 1.0)
  pixels = np.round((values + 1.0) / 2.0 * 255.0).astype(np.uint8)
  return pixels.reshape(-1, SIDE, SIDE, 1), np.asarray(labels, np.int64)


def find_manual_files(manual_dir):
  """Returns {'train': path, 'test': path} if both files are in `manual_dir`, else None."""
  if not manual_dir or not os.path.isdir(manual_dir):
    return None
  found = {}
  for split, stem in FILES.items():
    for candidate in (stem + '.gz', stem):
      path = os.path.join(manual_dir, candidate)
      if os.path.isfile(path):
        found[split] = path
        break
  return found if len(found) == len(FILES) else None


class Usps(base.LocalCodeBuilder):
  """USPS digits, 16×16 grey, from The Elements of Statistical Learning's data page."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': "Hastie's zip.train / zip.test."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      f'Optional: put zip.train.gz and zip.test.gz (gzipped or not) from {URL} in the manual dir '
      'to build without network access.')

  def _info(self):
    return self.dataset_info_from_configs(
        description='USPS digits (16x16, values in [-1, 1] scaled to 0..255).',
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(SIDE, SIDE, 1)),
            'label': tfds.features.ClassLabel(names=base.DIGIT_NAMES),
        }),
        supervised_keys=('image', 'label'),
        homepage='https://hastie.su.domains/ElemStatLearn/data.html',
    )

  def _split_generators(self, dl_manager):
    paths = find_manual_files(_manual_dir_or_none(dl_manager))
    if paths is None:
      paths = dl_manager.download({split: URL + base + '.gz' for split, base in FILES.items()})
    return {split: self._generate_examples(os.fspath(path)) for split, path in paths.items()}

  def _generate_examples(self, path):
    images, labels = parse(read_text(path), name=path)
    for index, (image, label) in enumerate(zip(images, labels)):
      yield index, {'image': image, 'label': int(label)}


def _manual_dir_or_none(dl_manager):
  """The manual dir if it exists and is non-empty (TFDS raises AssertionError otherwise)."""
  try:
    return os.fspath(dl_manager.manual_dir)
  except AssertionError:
    return None
