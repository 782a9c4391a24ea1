"""MNIST → USPS (docs/method.md §3): LeNet, 28×28×1, the release's hyper-parameters."""

from configs import base


def get_config():
  config = base.get_config()
  config.source.update(epochs=100, learning_rate=1e-4)
  config.target_only.update(epochs=100, learning_rate=1e-4)
  config.pixel.update(epochs=50)
  config.task.update(epochs=100, learning_rate=1e-4)
  config.feature.update(epochs=200)
  return config
