"""Which implementation runs the few ops this project tunes for CPUs (`config.train.kernels`).

`cpu_tuned` is `cycada_tf.ops` and the byte-drawn dropout masks of `cycada_tf.models.layers`:
reflection padding by gathers, swapped bfloat16 filter gradients, transposes moved as uint16 bits,
instance norm through a fused batch norm on a transposed view. Each was measured faster than
TF's own kernel on a CPU (docs/performance.md says where), and none was measured on a GPU, where
cuDNN's kernels are the fast path and the extra transposes and gathers are likely slower.
`stock` is plain TF/Keras: `tf.pad(..., 'REFLECT')`, `Conv2D`/`Conv2DTranspose`, an instance norm
of moments, float32-uniform dropout masks (still drawn for the global batch, so replica counts
agree). `auto` (the default) picks `cpu_tuned` only when every replica is a CPU.

One `cpu_tuned` op depends on the CPU model, not only on its being a CPU: the swapped bfloat16
filter gradient of `ops.conv2d` and `ops.conv2d_transpose` (`config.train.filter_gradient`). It
was written for oneDNN's AVX-512 BF16 filter gradient, which is barely faster than float32's; on
a CPU with AMX, oneDNN's own kernel is fast and the swap made the bfloat16 release pixel step
1.36× slower (docs/performance.md). So `auto` swaps unless the CPU has the `amx_bf16` flag;
`swapped` and `native` force either way. `auto` reads the CPU's flags, not what oneDNN was
allowed to use: where `ONEDNN_MAX_CPU_ISA` caps oneDNN below AMX, pass `swapped`. Float32
convolutions never swap.

Both paths compute the same functions with the same variables, so a checkpoint written under one
loads under the other. The choice is global state read when a step is traced, like Keras' dtype
policy: `workflow` and `train.bench` set it with `scope` around each stage.
"""

import contextlib
import functools

import tensorflow as tf

from cycada_tf import errors

CHOICES = ('auto', 'stock', 'cpu_tuned')
FILTER_GRADIENT_CHOICES = ('auto', 'swapped', 'native')
# CPU flags (x86 /proc/cpuinfo names) with which oneDNN's bfloat16 filter gradient beats the swap.
FAST_BF16_FILTER_GRADIENT_FLAGS = ('amx_bf16',)
_active = None  # None: not set, resolved as `auto` for the visible devices
_filter_gradient = None  # None: not set, resolved as `auto` for this CPU


@functools.lru_cache(maxsize=None)
def cpu_flags(path='/proc/cpuinfo'):
  """The CPU's feature flags (empty where /proc/cpuinfo is not readable, e.g. not Linux); read
  once, as every traced convolution asks."""
  try:
    with open(path) as f:
      for line in f:
        if line.startswith(('flags', 'Features')):
          return frozenset(line.split(':', 1)[1].split())
  except OSError:
    pass
  return frozenset()


def check_choice(choice):
  """UserError unless `choice` is a `config.train.kernels` value; touches no device."""
  return errors.check_choice('--config.train.kernels', choice, CHOICES)


def resolve(choice, strategy=None):
  """'stock' or 'cpu_tuned' for a `config.train.kernels` value and the devices that will run."""
  if check_choice(choice) != 'auto':
    return choice
  return 'cpu_tuned' if replicas_on_cpu(strategy) else 'stock'


def check_filter_gradient(choice):
  """UserError unless `choice` is a `config.train.filter_gradient` value."""
  return errors.check_choice('--config.train.filter_gradient', choice, FILTER_GRADIENT_CHOICES)


def resolve_filter_gradient(choice, flags=None):
  """'swapped' or 'native' for a `config.train.filter_gradient` value on a CPU with `flags`
  (this CPU's when None): `auto` is 'native' where AMX runs oneDNN's own kernel fast."""
  if check_filter_gradient(choice) != 'auto':
    return choice
  flags = cpu_flags() if flags is None else flags
  return 'native' if any(f in flags for f in FAST_BF16_FILTER_GRADIENT_FLAGS) else 'swapped'


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


def swaps_filter_gradient():
  """Whether `ops.conv2d` traces its bfloat16 filter gradient as the swapped convolution now."""
  return (_filter_gradient or resolve_filter_gradient('auto')) == 'swapped'


@contextlib.contextmanager
def scope(choice, strategy=None, filter_gradient=None):
  """Traces and runs models inside with `choice` resolved for `strategy` and `filter_gradient`
  for this CPU (None keeps the enclosing scope's, or `auto` outside any); restores both
  afterwards. Both are resolved before anything changes, so a bad value leaves no trace."""
  global _active, _filter_gradient
  path = resolve(choice, strategy)
  gradient = resolve_filter_gradient(filter_gradient) if filter_gradient else _filter_gradient
  previous = _active, _filter_gradient
  _active, _filter_gradient = path, gradient
  try:
    yield _active
  finally:
    _active, _filter_gradient = previous
