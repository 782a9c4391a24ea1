"""UCI optical digits → MNIST (offline default, SPEC §6): LeNet, 28×28×1."""

from configs import base


def get_config():
  config = base.get_config()
  # Half-width generators: 4× fewer FLOPs, so the pixel stage fits the 2-core CPU budget.
  config.model.generator_filters = 32
  config.pixel.update(epochs=10, decay_epochs=5)
  return config
