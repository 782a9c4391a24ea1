"""Which implementation runs the few ops this project tunes for CPUs (`config.train.kernels`).

`cpu_tuned` is `cycada_tf.ops` and the byte-drawn dropout masks of `cycada_tf.models.layers`:
reflection padding by gathers, swapped bfloat16 filter gradients, transposes moved as uint16 bits,
instance norm through a fused batch norm on a transposed view. Each was measured faster than
TF's own kernel on a CPU (docs/performance.md says where), and none was measured on a GPU, where
cuDNN's kernels are the fast path and the extra transposes and gathers are likely slower.
`stock` is plain TF/Keras: `tf.pad(..., 'REFLECT')`, `Conv2D`/`Conv2DTranspose`, an instance norm
of moments, float32-uniform dropout masks (still drawn for the global batch, so replica counts
agree). `auto` (the default) picks `cpu_tuned` only when every replica is a CPU.

Both paths compute the same functions with the same variables, so a checkpoint written under one
loads under the other. The choice is global state read when a step is traced, like Keras' dtype
policy: `workflow` and `train.bench` set it with `scope` around each stage.
"""

import contextlib

import tensorflow as tf

from cycada_tf import errors

CHOICES = ('auto', 'stock', 'cpu_tuned')
_active = None  # None: not set, resolved as `auto` for the visible devices


def check_choice(choice):
  """UserError unless `choice` is a `config.train.kernels` value; touches no device."""
  return errors.check_choice('--config.train.kernels', choice, CHOICES)


def resolve(choice, strategy=None):
  """'stock' or 'cpu_tuned' for a `config.train.kernels` value and the devices that will run."""
  if check_choice(choice) != 'auto':
    return choice
  return 'cpu_tuned' if replicas_on_cpu(strategy) else 'stock'


def replicas_on_cpu(strategy=None):
  """True when every device `strategy` computes on is a CPU.

  The default strategy (one device, no `worker_devices`) runs where TF places ops: on the first
  GPU if there is one. Without a strategy, the visible devices decide.
  """
  try:
    devices = strategy.extended.worker_devices if strategy is not None else None
  except RuntimeError:  # the default strategy
    devices = None
  if devices is None:
    return not tf.config.list_logical_devices('GPU') and not tf.config.list_logical_devices('TPU')
  return all(tf.DeviceSpec.from_string(d).device_type == 'CPU' for d in devices)


def active():
  """The path layers trace now: what `scope` set, else `auto` for the visible devices."""
  return _active or resolve('auto')


def cpu_tuned():
  return active() == 'cpu_tuned'


@contextlib.contextmanager
def scope(choice, strategy=None):
  """Traces and runs models inside with `choice` resolved for `strategy`; restores afterwards."""
  global _active
  previous, _active = _active, resolve(choice, strategy)
  try:
    yield _active
  finally:
    _active = previous
