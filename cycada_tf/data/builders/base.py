"""What the project's digit builders share: the TFDS base class and the stratified split.

A module of its own so that the builder modules import it without importing the package that
imports them (no import cycle).
"""

import inspect

from etils import epath
import numpy as np
import tensorflow_datasets as tfds


class LocalCodeBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """A `GeneratorBasedBuilder` whose `code_path` is simply the file defining the class.

  TFDS 4.9's default `code_path` imports the `importlib_resources` backport, which TFDS only
  declares as a dependency for Python < 3.9; without it, `download_and_prepare` crashes. The
  file path is all TFDS needs here (to look for an optional `checksums.tsv` next to the builder).
  """

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    return epath.Path(inspect.getfile(cls))


DIGIT_NAMES = tuple(str(d) for d in range(10))


def segmentation_info(builder, description, homepage):
  """The DatasetInfo of a segmentation builder of real photographs or game frames: colour images
  of any size and single-channel PNG label maps of train ids (255 void), as
  (image, segmentation_label) pairs."""
  return builder.dataset_info_from_configs(
      description=description,
      features=tfds.features.FeaturesDict({
          'image': tfds.features.Image(shape=(None, None, 3)),
          'segmentation_label': tfds.features.Image(shape=(None, None, 1), encoding_format='png'),
      }),
      supervised_keys=('image', 'segmentation_label'),
      homepage=homepage,
  )


def stratified_split(labels, test_size):
  """Returns sorted (train, test) index arrays with every class in proportion in both parts.

  Fixed `random_state=0` so every machine builds the same split. The indices double as TFDS
  example keys, which fix the stored order, so sorting them only makes the split easy to read.
  """
  # Imported here: scikit-learn is only needed when an offline dataset is first built.
  from sklearn import model_selection  # pylint: disable=g-import-not-at-top
  indices = np.arange(len(labels))
  train, test = model_selection.train_test_split(
      indices, test_size=test_size, stratify=labels, random_state=0)
  return np.sort(train), np.sort(test)


class BundledDigitsBuilder(LocalCodeBuilder, skip_registration=True):
  """Digits that an installed package ships: a fixed stratified train/test split of them.

  Subclasses set VERSION, RELEASE_NOTES, IMAGE_SHAPE, NUM_TEST, DESCRIPTION and HOMEPAGE and
  implement `_load_arrays()` → (uint8 images [N, H, W, 1], int64 labels [N]).
  """

  IMAGE_SHAPE = None
  NUM_TEST = None
  DESCRIPTION = ''
  HOMEPAGE = ''

  def _load_arrays(self):
    raise NotImplementedError

  def _info(self):
    return self.dataset_info_from_configs(
        description=self.DESCRIPTION,
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=self.IMAGE_SHAPE),
            'label': tfds.features.ClassLabel(names=DIGIT_NAMES),
        }),
        supervised_keys=('image', 'label'),
        homepage=self.HOMEPAGE,
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # The data ships with an installed package.
    images, labels = self._load_arrays()
    train, test = stratified_split(labels, self.NUM_TEST)
    return {
        'train': self._generate_examples(images, labels, train),
        'test': self._generate_examples(images, labels, test),
    }

  def _generate_examples(self, images, labels, indices):
    for index in indices:
      yield int(index), {'image': images[index], 'label': int(labels[index])}
