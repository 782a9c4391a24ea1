"""MNIST → UCI optical digits (offline, SPEC §6): the same settings as UCI → MNIST."""

from configs.uci_mnist import get_config  # pylint: disable=unused-import
