r"""Milliseconds of the element-wise ops `cycada_tf.ops` and the dropout layers replace, against
TensorFlow's / Keras' own, forward and forward + backward, as JSON lines.

    python -m train.bench_ops [--shape=100,8,8,256] [--precision=bf16] [--repeats=30]

The default shape is one release ResNet-9 residual block's activations (batch 100, 8×8, 256
channels). Each line names the op, the two implementations and their times. The step-level effect
of these ops is what `train.bench` measures; this is the evidence for the individual choices
(docs/performance.md cites its output).
"""

import json
import os
import statistics
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import flags
import keras
import tensorflow as tf

from cycada_tf import ops
from cycada_tf.models import layers
from train import cli

FLAGS = flags.FLAGS


def _define_flags():
  """Defined only when run as a program, so importing this module never clashes with train.main."""
  flags.DEFINE_list('shape', ['100', '8', '8', '256'], 'NHWC activation shape.')
  flags.DEFINE_enum('precision', 'bf16', ['fp32', 'bf16'], 'Activation dtype.')
  flags.DEFINE_integer('repeats', 30, 'Timed calls per implementation (median reported).')


def median_milliseconds(fn, repeats):
  """Median wall time of `fn()` (a compiled function) over `repeats` calls, after two warm-ups."""
  fn()
  fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return 1e3 * statistics.median(times)


def _forward_and_backward(fn, x, weights):
  """A compiled function returning d(sum(fn(x)·weights))/dx, so both passes run."""
  @tf.function
  def run():
    with tf.GradientTape() as tape:
      tape.watch(x)
      y = fn(x)
      loss = tf.reduce_sum(tf.cast(y, tf.float32) * weights)
    return tape.gradient(loss, x)
  return run


def _mirror_pad(x):
  return tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]], mode='REFLECT')


def _keras_dropout_mask(seed):
  # keras.layers.Dropout's draw: one float32 uniform per unit, kept where >= rate.
  return lambda x: tf.where(keras.random.uniform(tf.shape(x), seed=seed) >= 0.5,
                            x * tf.cast(2.0, x.dtype), tf.zeros((), x.dtype))


def _byte_dropout_mask(seed):
  return lambda x: layers.global_batch_dropout(x, 0.5, seed)


def _keras_instance_norm(channels, dtype):
  norm = keras.layers.GroupNormalization(groups=-1, epsilon=1e-5, dtype=dtype)
  norm.build((None, None, None, channels))
  return norm


def comparisons(shape, dtype):
  """(op name, {implementation: function of x}) for each op this project replaces."""
  channels = shape[-1]
  gamma, beta = tf.ones([channels]), tf.zeros([channels])
  policy = 'mixed_bfloat16' if dtype == tf.bfloat16 else 'float32'
  return [
      ('reflection pad 1', {'tf.pad REFLECT (MirrorPad)': _mirror_pad,
                            'ops.reflect_pad_2d': lambda x: ops.reflect_pad_2d(x, 1)}),
      ('dropout 0.5', {'float32 uniforms (Keras)':
                           _keras_dropout_mask(keras.random.SeedGenerator(1)),
                       'layers.global_batch_dropout (bytes)':
                           _byte_dropout_mask(keras.random.SeedGenerator(1))}),
      ('instance norm', {'keras GroupNormalization(groups=-1)':
                             _keras_instance_norm(channels, policy),
                         'ops.instance_norm':
                             lambda x: ops.instance_norm(x, gamma, beta, 1e-5)}),
      # The instance norm's [H, W, N, C] view and the swapped filter gradient's [C, H, W, N].
      ('transpose to HWNC', {'tf.transpose': lambda x: tf.transpose(x, [1, 2, 0, 3]),
                             'ops.transpose': lambda x: ops.transpose(x, [1, 2, 0, 3])}),
      ('transpose to CHWN', {'tf.transpose': lambda x: tf.transpose(x, [3, 1, 2, 0]),
                             'ops.transpose': lambda x: ops.transpose(x, [3, 1, 2, 0])}),
  ]


def run(shape, dtype, repeats):
  """One result dict per op: milliseconds forward and forward + backward per implementation."""
  x = tf.cast(tf.random.stateless_normal(shape, seed=(1, 2)), dtype)
  weights = tf.random.stateless_normal([1], seed=(3, 4))  # Any non-zero upstream gradient.
  results = []
  for op_name, implementations in comparisons(shape, dtype):
    timings = {}
    for name, fn in implementations.items():
      forward = tf.function(lambda fn=fn: fn(x))
      both = _forward_and_backward(fn, x, weights)
      timings[name] = {'forward_ms': round(median_milliseconds(forward, repeats), 3),
                       'forward_backward_ms': round(median_milliseconds(both, repeats), 3)}
    results.append({'op': op_name, 'shape': list(shape), 'dtype': dtype.name,
                    'repeats': repeats, 'implementations': timings})
  return results


def main(argv):
  del argv
  shape = [int(s) for s in FLAGS.shape]
  dtype = tf.bfloat16 if FLAGS.precision == 'bf16' else tf.float32
  for result in run(shape, dtype, FLAGS.repeats):
    print(json.dumps(result), flush=True)


if __name__ == '__main__':
  _define_flags()
  cli.run_main(main)
