"""GTA5 ("Playing for Data", Richter et al. 2016): 24,966 Grand Theft Auto V frames, 19 classes.

The dataset cannot be downloaded by TFDS here; put its files in the manual dir
(`<data_dir>/downloads/manual`) in the layout that
https://download.visinf.tu-darmstadt.de/data/from_games/ publishes:

    <manual_dir>/images/00001.png … 24966.png    (01_images.zip … 10_images.zip)
    <manual_dir>/labels/00001.png … 24966.png    (01_labels.zip … 10_labels.zip)
    <manual_dir>/split.mat                       (optional, from read_mapping.zip)

Every zip unpacks to `images/` or `labels/`, so extracting all twenty in the manual dir gives that
layout. Zips extracted each into a folder of their own (`<manual_dir>/01_images/images/…`) work
too: `images/` and `labels/` are looked for in the manual dir and one level below it, and images
and labels are matched by file name. A subset of the parts builds a smaller dataset; an image
without its label (or the reverse) is an error, since it means a part is missing.

Labels are palette PNGs whose indices are Cityscapes labelIds. They are mapped to the 19
Cityscapes train ids (void = 255, `segmentation_labels.CITYSCAPES_LOOKUP`) when the dataset is
built, so the stored `segmentation_label` is ready to use and loading costs nothing extra. A few
images in the release differ in size from their label; those are resized (bilinear) to the
label's size, as the CyCADA release's loader does. Images keep their size otherwise (mostly
1914×1052).

Splits. The CyCADA release trains the source model on all 24,966 images, so nothing here can be
a "test" set without giving up some of them; the held-out split only serves source-test metrics
that are not measured on training images:
- without split.mat (the usual case): `test` is every image whose number is a multiple of 50
  (00050, 00100, …, 24950: 499 images, 2 %, spread evenly over the whole capture) and `train` the
  other 24,467;
- with the official split.mat: `test` is its `testIds` (6,181 images) and `train` its
  `trainIds` + `valIds` (18,785; nothing here is tuned on GTA5, so its val set trains). Images
  that split.mat does not list train.
Which rule applied is logged when the dataset is built and shows in the split sizes.
"""

import os
import re

from absl import logging
import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from cycada_tf.data import segmentation_labels
from cycada_tf.data.builders import base

HOMEPAGE = 'https://download.visinf.tu-darmstadt.de/data/from_games/'
CLASS_NAMES = segmentation_labels.CITYSCAPES_CLASSES
# Without split.mat: images whose number is a multiple of this are the test split.
TEST_EVERY = 50
SPLIT_FILE = 'split.mat'
IMAGE_DIR, LABEL_DIR = 'images', 'labels'
HOW_TO_GET = (
    f'download 01_images.zip … 10_images.zip and 01_labels.zip … 10_labels.zip from {HOMEPAGE} '
    'and extract them in {manual_dir} so that {manual_dir}/images/*.png and '
    '{manual_dir}/labels/*.png exist (optionally add split.mat from read_mapping.zip)')

_NUMBER = re.compile(r'\d+')


def _subdirs(directory):
  return sorted(entry.path for entry in os.scandir(directory) if entry.is_dir())


def _png_files(directories):
  """{stem: path} of the PNGs in `directories`; ValueError if a stem appears twice."""
  files = {}
  for directory in directories:
    for name in sorted(os.listdir(directory)):
      stem, ext = os.path.splitext(name)
      path = os.path.join(directory, name)
      if ext.lower() != '.png' or not os.path.isfile(path):
        continue
      if stem in files:
        raise ValueError(f'{name} is both in {os.path.dirname(files[stem])} and in {directory}; '
                         'keep one copy')
      files[stem] = path
  return files


def find_manual_files(manual_dir):
  """Returns ({stem: (image path, label path)}, split.mat path or None).

  Raises ValueError with a short description of what is missing (no images or labels, an image
  without its label or the reverse); the domain layer turns it into a one-line UserError.
  """
  if not manual_dir or not os.path.isdir(manual_dir):
    raise ValueError(f'{manual_dir} does not exist')
  levels = [manual_dir] + _subdirs(manual_dir)
  found = {}
  for kind in (IMAGE_DIR, LABEL_DIR):
    directories = [os.path.join(d, kind) for d in levels if os.path.isdir(os.path.join(d, kind))]
    found[kind] = _png_files(directories)
    if not found[kind]:
      raise ValueError(f'no {kind}/*.png in {manual_dir} (or one level below it)')
  images, labels = found[IMAGE_DIR], found[LABEL_DIR]
  for kind, have, other in ((IMAGE_DIR, images, labels), (LABEL_DIR, labels, images)):
    unmatched = sorted(set(have) - set(other))
    if unmatched:
      what = 'image' if kind == IMAGE_DIR else 'label'
      missing = 'label' if kind == IMAGE_DIR else 'image'
      raise ValueError(f'{len(unmatched)} {what}(s) have no {missing}, e.g. '
                       f'{have[unmatched[0]]} (a {missing}s zip part is missing?)')
  split_files = [os.path.join(d, SPLIT_FILE) for d in levels
                 if os.path.isfile(os.path.join(d, SPLIT_FILE))]
  pairs = {stem: (images[stem], labels[stem]) for stem in sorted(images)}
  return pairs, (split_files[0] if split_files else None)


def image_number(stem, position):
  """The frame number in the file name (00042.png → 42), else the 1-based sorted position."""
  match = _NUMBER.fullmatch(stem)
  return int(match.group()) if match else position + 1


def read_split_file(path):
  """(train ids, test ids) as sets of image numbers from the official split.mat."""
  from scipy import io as scipy_io  # pylint: disable=g-import-not-at-top
  try:
    mat = scipy_io.loadmat(path)
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f'{path} is not a readable split.mat ({type(e).__name__}: {e})') from e
  try:
    ids = {key: {int(i) for i in np.asarray(mat[key]).ravel()}
           for key in ('trainIds', 'valIds', 'testIds')}
  except KeyError as e:
    raise ValueError(f'{path} has no {e} array; expected trainIds, valIds and testIds') from e
  return ids['trainIds'] | ids['valIds'], ids['testIds']


def assign_splits(stems, split_file=None):
  """{'train': [stem, …], 'test': [stem, …]} by the rule in the module docstring."""
  numbers = {stem: image_number(stem, i) for i, stem in enumerate(sorted(stems))}
  if split_file:
    _, test_ids = read_split_file(split_file)
    is_test = {stem: number in test_ids for stem, number in numbers.items()}
  else:
    is_test = {stem: number % TEST_EVERY == 0 for stem, number in numbers.items()}
  return {'train': [s for s in sorted(stems) if not is_test[s]],
          'test': [s for s in sorted(stems) if is_test[s]]}


def read_label(path):
  """uint8 [H, W] Cityscapes labelIds from a palette (or greyscale) PNG; ValueError if RGB."""
  with Image.open(path) as label:
    if label.mode not in ('P', 'L'):
      raise ValueError(f'label {path} is a {label.mode} image; expected the palette PNG of '
                       'labelIds that GTA5 ships')
    return np.asarray(label, np.uint8)


def read_image(path, size):
  """The image as TFDS should store it: its path if usable as is, else a uint8 RGB array.

  `size` is the label's (width, height); a different-sized image is resized to it.
  """
  with Image.open(path) as image:
    if image.size == size and image.format in ('PNG', 'JPEG'):
      return path
    image = image.convert('RGB')
    if image.size != size:
      image = image.resize(size, resample=Image.BILINEAR)
    return np.asarray(image, np.uint8)


class Gta5(base.LocalCodeBuilder):
  """GTA5 frames with their 19-class Cityscapes-style labels (train ids, 255 void)."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Labels mapped to Cityscapes train ids; test = split.mat testIds '
                            'or every 50th image.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = HOW_TO_GET.format(manual_dir='the manual dir')

  def _info(self):
    return base.segmentation_info(
        self, 'GTA5 (Playing for Data): game frames, labels as the 19 Cityscapes train ids '
        '(255 = void).', HOMEPAGE)

  def _split_generators(self, dl_manager):
    pairs, split_file = find_manual_files(os.fspath(dl_manager.manual_dir))
    splits = assign_splits(pairs, split_file)
    for split, stems in splits.items():
      if not stems:  # TFDS cannot write an empty split; say why instead.
        rule = (f'the testIds of {split_file}' if split_file
                else f'numbers divisible by {TEST_EVERY}')
        raise ValueError(f'none of the {len(pairs)} images falls in the {split} split (test: '
                         f'{rule}); extract more of the dataset parts')
    logging.info('gta5: %d train / %d test images (%s)', len(splits['train']),
                 len(splits['test']),
                 f'split from {split_file}' if split_file else f'every {TEST_EVERY}th is test')
    return {split: self._generate_examples([(stem, *pairs[stem]) for stem in stems])
            for split, stems in splits.items()}

  def _generate_examples(self, files):
    lookup = segmentation_labels.CITYSCAPES_LOOKUP
    for stem, image_path, label_path in files:
      label = read_label(label_path)
      train_ids = segmentation_labels.map_labels_np(label, lookup)[..., np.newaxis]
      height, width = label.shape
      yield stem, {'image': read_image(image_path, (width, height)),
                   'segmentation_label': train_ids}
