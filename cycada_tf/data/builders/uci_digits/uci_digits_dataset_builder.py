"""UCI optical digits from scikit-learn: 1,797 real 8×8 digits, no download (docs/method.md §6).

The 16 grey levels (0..16) are stretched to 0..255 so every domain shares the uint8 convention;
the split is stratified and fixed (1,437 train / 360 test) so results are comparable across runs.
"""

import numpy as np
import tensorflow_datasets as tfds

from cycada_tf.data.builders import base

NUM_TEST = 360


def to_uint8(images):
  """Maps sklearn's 0..16 grey levels to 0..255, rounding to the nearest level."""
  return np.round(np.asarray(images, np.float64) * 255.0 / 16.0).astype(np.uint8)


class UciDigits(base.BundledDigitsBuilder):
  """UCI optical recognition of handwritten digits (the sklearn `load_digits` copy)."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Stratified 1,437 / 360 split with random_state=0.'}
  IMAGE_SHAPE = (8, 8, 1)
  NUM_TEST = NUM_TEST
  DESCRIPTION = 'UCI optical digits (8x8, 16 grey levels scaled to 0..255), from scikit-learn.'
  HOMEPAGE = 'https://archive.ics.uci.edu/dataset/80'

  def _load_arrays(self):
    from sklearn import datasets  # pylint: disable=g-import-not-at-top
    digits = datasets.load_digits()
    return to_uint8(digits.images)[..., np.newaxis], digits.target.astype(np.int64)
