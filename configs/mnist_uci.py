"""MNIST → UCI optical digits (offline, docs/method.md §6): the same settings as UCI → MNIST."""

from configs.uci_mnist import get_config  # pylint: disable=unused-import
