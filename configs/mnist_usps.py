"""MNIST → USPS (docs/method.md §3): LeNet, 28×28×1, the release's hyper-parameters."""

from configs import base


def get_config():
  config = base.get_config()
  config.pixel.update(epochs=50)
  config.feature.update(epochs=200)
  return config
