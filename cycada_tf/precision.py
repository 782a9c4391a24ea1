"""Numeric precision of training: float32, or bfloat16 mixed precision (`config.train.precision`).

`bf16` is Keras' `mixed_bfloat16` policy: layers compute in bfloat16 (half the memory traffic,
and CPUs with AVX-512 BF16/AMX or recent GPUs run bf16 matmuls and convolutions about twice as
fast), while variables, optimizer state and every loss stay float32. bfloat16 keeps float32's
exponent range, so unlike float16 no loss scaling is needed. Each network casts what it returns
(logits, features, images, scores) to float32, so losses, the image pool and metrics never see
bfloat16.

The policy is global Keras state read when a layer is *created*, so it must be set before models
are built; `policy_scope` sets it and restores the previous one afterwards, so one stage's choice
cannot leak into the next (or into another test).
"""

import contextlib

import keras

from cycada_tf import kernels

from cycada_tf.errors import check_choice

# config value → Keras dtype policy name.
POLICIES = {'fp32': 'float32', 'bf16': 'mixed_bfloat16'}


def policy_name(precision):
  """The Keras policy for a `config.train.precision` value; UserError for unknown values."""
  return POLICIES[check_choice('--config.train.precision', precision, POLICIES)]


@contextlib.contextmanager
def policy_scope(precision):
  """Builds and runs models inside with the policy for `precision`, then restores the old one."""
  name = policy_name(precision)
  previous = keras.mixed_precision.global_policy()
  keras.mixed_precision.set_global_policy(name)
  try:
    yield
  finally:
    keras.mixed_precision.set_global_policy(previous)


def current():
  """'bf16' or 'fp32': the precision the current global policy computes in."""
  return 'bf16' if keras.mixed_precision.global_policy().compute_dtype == 'bfloat16' else 'fp32'


# CPU features that run bfloat16 matmuls natively (x86 /proc/cpuinfo flag names).
NATIVE_BF16_FLAGS = ('avx512_bf16', 'amx_bf16')


def bf16_warning(strategy, flags=None):
  """One line when bf16 would be emulated (a CPU run without AVX-512 BF16 or AMX), else None.

  There, bfloat16 matmuls and convolutions are converted to float32 and back and run far slower
  than float32 itself.
  """
  if not kernels.replicas_on_cpu(strategy):
    return None
  flags = kernels.cpu_flags() if flags is None else flags
  if not flags or any(f in flags for f in NATIVE_BF16_FLAGS):
    return None
  return ('warning: bf16 was asked for on a CPU without native bfloat16 (no avx512_bf16 or '
          'amx_bf16 flag): it is emulated and much slower than fp32 here; use '
          '--config.train.precision=fp32.')
