"""UCI optical digits from scikit-learn: 1,797 real 8×8 digits that need no download (SPEC §6).

The 16 grey levels (0..16) are stretched to 0..255 so every domain shares the uint8 convention;
the split is stratified and fixed (1,437 train / 360 test) so results are comparable across runs.
"""

import numpy as np
import tensorflow_datasets as tfds

from cycada_tf.data import builders

NUM_TEST = 360


def to_uint8(images):
  """Maps sklearn's 0..16 grey levels to 0..255, rounding to the nearest level."""
  return np.round(np.asarray(images, np.float64) * 255.0 / 16.0).astype(np.uint8)


class UciDigits(builders.LocalCodeBuilder):
  """UCI optical recognition of handwritten digits (the sklearn `load_digits` copy)."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Stratified 1,437 / 360 split with random_state=0.'}

  def _info(self):
    return self.dataset_info_from_configs(
        description='UCI optical digits (8x8, 16 grey levels scaled to 0..255), from scikit-learn.',
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(8, 8, 1)),
            'label': tfds.features.ClassLabel(names=builders.DIGIT_NAMES),
        }),
        supervised_keys=('image', 'label'),
        homepage='https://archive.ics.uci.edu/dataset/80',
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # The data ships with scikit-learn.
    from sklearn import datasets  # pylint: disable=g-import-not-at-top
    digits = datasets.load_digits()
    images = to_uint8(digits.images)[..., np.newaxis]
    labels = digits.target.astype(np.int64)
    train, test = builders.stratified_split(labels, NUM_TEST)
    return {
        'train': self._generate_examples(images, labels, train),
        'test': self._generate_examples(images, labels, test),
    }

  def _generate_examples(self, images, labels, indices):
    for index in indices:
      yield int(index), {'image': images[index], 'label': int(labels[index])}
