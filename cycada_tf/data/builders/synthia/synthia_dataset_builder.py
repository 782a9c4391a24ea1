"""SYNTHIA-SEQS front views of one season (`synthia_fall`, `synthia_winter`): 13 classes.

The CyCADA paper adapts SYNTHIA fall → winter on the video sequences' front-facing views
(10,852 fall / 7,654 winter images). Download the SYNTHIA-SEQS-<NN>-FALL and -WINTER archives
from http://synthia-dataset.net and extract them in the manual dir (`<data_dir>/downloads/manual`)
as published, one folder per sequence (directly in the manual dir or one level below it):

    <manual_dir>/SYNTHIA-SEQS-01-FALL/RGB/Stereo_Left/Omni_F/000000.png …
    <manual_dir>/SYNTHIA-SEQS-01-FALL/GT/LABELS/Stereo_Left/Omni_F/000000.png …

Only the left camera's front view (Stereo_Left/Omni_F) is read. The label files are 16-bit PNGs
whose first channel is the SYNTHIA class id (the second holds instance ids). PIL would keep only
the high byte of such a file, so labels are decoded with `tf.io.decode_png(dtype=uint16)` after
reading the bit depth from the PNG header. Class ids are mapped to the paper's 13 classes
(`segmentation_labels.SYNTHIA_LOOKUP`, void = 255) when the dataset is built, so the stored
`segmentation_label` is ready to use.

Splits. Consecutive video frames are near-duplicates, so a split by every k-th frame would test
on images that are all but in the training set. Instead every sequence's frames are cut into
blocks of 100 consecutive frame numbers and every fifth block is the test split (frames
400–499, 900–999, …: 20 %), which spreads the test images over every sequence and the whole
route while keeping them 100 frames away from training frames except at block edges. The rule
only depends on the frame numbers, so it is the same on every machine and for any subset of
sequences.
"""

import os
import re
import struct

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from cycada_tf.data import segmentation_labels
from cycada_tf.data.builders import base

HOMEPAGE = 'http://synthia-dataset.net'
CLASS_NAMES = segmentation_labels.SYNTHIA_CLASSES
VIEW = ('Stereo_Left', 'Omni_F')
IMAGE_SUBDIR = os.path.join('RGB', *VIEW)
LABEL_SUBDIR = os.path.join('GT', 'LABELS', *VIEW)
BLOCK = 100        # frames per block
TEST_EVERY = 5     # every fifth block is test
HOW_TO_GET = (
    'download the SYNTHIA-SEQS-<NN>-{season} archives from ' + HOMEPAGE + ' and extract them in '
    '{manual_dir} so that {manual_dir}/SYNTHIA-SEQS-<NN>-{season}/' + IMAGE_SUBDIR + '/*.png and '
    '{manual_dir}/SYNTHIA-SEQS-<NN>-{season}/' + LABEL_SUBDIR + '/*.png exist')

_PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


def sequence_dirs(manual_dir, season):
  """Sorted SYNTHIA-SEQS-<NN>-<SEASON> directories in `manual_dir` or one level below."""
  pattern = re.compile(rf'SYNTHIA-SEQS-\d+-{season}', re.IGNORECASE)
  found = []
  if not manual_dir or not os.path.isdir(manual_dir):
    return found
  for entry in sorted(os.scandir(manual_dir), key=lambda e: e.name):
    if not entry.is_dir():
      continue
    if pattern.fullmatch(entry.name):
      found.append(entry.path)
    else:
      found.extend(sub.path for sub in sorted(os.scandir(entry.path), key=lambda e: e.name)
                   if sub.is_dir() and pattern.fullmatch(sub.name))
  return found


def find_manual_files(manual_dir, season):
  """[(key, image path, label path, frame number)] of one season's front views, sorted.

  Raises ValueError with a short description of what is missing; the domain layer turns it into
  a one-line UserError.
  """
  sequences = sequence_dirs(manual_dir, season)
  if not sequences:
    raise ValueError(f'no SYNTHIA-SEQS-<NN>-{season} folder in {manual_dir}')
  files = []
  for sequence in sequences:
    image_dir = os.path.join(sequence, IMAGE_SUBDIR)
    label_dir = os.path.join(sequence, LABEL_SUBDIR)
    for directory in (image_dir, label_dir):
      if not os.path.isdir(directory):
        raise ValueError(f'{directory} does not exist (an incomplete extraction?)')
    images = {os.path.splitext(n)[0]: n for n in os.listdir(image_dir) if n.endswith('.png')}
    labels = {os.path.splitext(n)[0]: n for n in os.listdir(label_dir) if n.endswith('.png')}
    if not images:
      raise ValueError(f'no *.png in {image_dir}')
    for have, other, directory, what in ((images, labels, image_dir, 'label'),
                                         (labels, images, label_dir, 'image')):
      unmatched = sorted(set(have) - set(other))
      if unmatched:
        raise ValueError(f'{os.path.join(directory, have[unmatched[0]])} has no {what} '
                         f'({len(unmatched)} such files)')
    name = os.path.basename(sequence)
    for position, stem in enumerate(sorted(images)):
      number = int(stem) if stem.isdigit() else position
      files.append((f'{name}/{stem}', os.path.join(image_dir, images[stem]),
                    os.path.join(label_dir, labels[stem]), number))
  return files


def is_test_frame(number):
  return (number // BLOCK) % TEST_EVERY == TEST_EVERY - 1


def png_header(data, path='<png>'):
  """(width, height, bit depth) from a PNG's IHDR chunk."""
  if data[:8] != _PNG_SIGNATURE or data[12:16] != b'IHDR':
    raise ValueError(f'{path} is not a PNG file')
  width, height, depth = struct.unpack('>IIB', data[16:25])
  return width, height, depth


def read_label(path):
  """uint8 [H, W] train ids from a SYNTHIA label PNG (16-bit or 8-bit, class id in channel 0)."""
  with open(path, 'rb') as f:
    data = f.read()
  _, _, depth = png_header(data, path)
  dtype = tf.uint16 if depth == 16 else tf.uint8
  ids = tf.io.decode_png(data, channels=0, dtype=dtype).numpy()[..., 0]
  return segmentation_labels.map_labels_np(ids, segmentation_labels.SYNTHIA_LOOKUP)


def image_size(path):
  with open(path, 'rb') as f:
    width, height, _ = png_header(f.read(33), path)
  return width, height


class SynthiaSeqsBuilder(base.LocalCodeBuilder, skip_registration=True):
  """One season of SYNTHIA-SEQS; subclasses set SEASON."""

  SEASON = None
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Stereo_Left/Omni_F views, 13 CyCADA classes, every fifth block of '
                            '100 frames is test.'}

  def _info(self):
    return base.segmentation_info(
        self, f'SYNTHIA-SEQS {self.SEASON.lower()} front views (Stereo_Left/Omni_F), labels as '
        'the 13 classes of CyCADA fall -> winter (255 = void).', HOMEPAGE)

  def _split_generators(self, dl_manager):
    files = find_manual_files(os.fspath(dl_manager.manual_dir), self.SEASON)
    splits = {'train': [f for f in files if not is_test_frame(f[3])],
              'test': [f for f in files if is_test_frame(f[3])]}
    for split, chosen in splits.items():
      if not chosen:  # TFDS cannot write an empty split; say why instead.
        raise ValueError(f'none of the {len(files)} {self.SEASON} frames falls in the {split} '
                         f'split (test: frames whose number // {BLOCK} % {TEST_EVERY} == '
                         f'{TEST_EVERY - 1}); are the sequences complete?')
    return {split: self._generate_examples(chosen) for split, chosen in splits.items()}

  def _generate_examples(self, files):
    for key, image_path, label_path, _ in files:
      label = read_label(label_path)
      if image_size(image_path) != (label.shape[1], label.shape[0]):
        raise ValueError(f'{image_path} is {image_size(image_path)} but its label {label_path} '
                         f'is {(label.shape[1], label.shape[0])} (width, height)')
      yield key, {'image': image_path, 'segmentation_label': label[..., np.newaxis]}


class SynthiaFall(SynthiaSeqsBuilder):
  """SYNTHIA-SEQS-*-FALL front views (the CyCADA source domain)."""
  SEASON = 'FALL'
  MANUAL_DOWNLOAD_INSTRUCTIONS = HOW_TO_GET.format(season=SEASON, manual_dir='the manual dir')


class SynthiaWinter(SynthiaSeqsBuilder):
  """SYNTHIA-SEQS-*-WINTER front views (the CyCADA target domain)."""
  SEASON = 'WINTER'
  MANUAL_DOWNLOAD_INSTRUCTIONS = HOW_TO_GET.format(season=SEASON, manual_dir='the manual dir')
