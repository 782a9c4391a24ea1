"""UCI optical digits → MNIST (offline default, SPEC §6): LeNet, 28×28×1."""

from configs import base


def get_config():
  return base.get_config()
