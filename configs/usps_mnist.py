"""USPS → MNIST (docs/method.md §3): the same LeNet settings as MNIST → USPS."""

from configs.mnist_usps import get_config  # pylint: disable=unused-import
