r"""Speed of one stage's real training step (or of its input pipeline), as one JSON line.

    python -m train.bench --stage=pixel --dataset=svhn_mnist [--precision=bf16] [--steps=100]
    python -m train.bench --stage=source --mode=input

`--mode=step` (default) builds the stage exactly as training does (same builders, models, losses,
optimizers, strategy and the trainer's compiled multi-step function, `trainer.make_run_steps`)
with freshly initialised networks, feeds it one synthetic batch of the config's shape repeated
(`Dataset.from_tensors(batch).repeat()` per replica, so input costs nothing), and times
`--steps` steps in calls of `config.train.steps_per_call` after `--warmup` calls. It reports
the median examples/s over those calls, the step's FLOPs (`cycada_tf.flops`, counted on the
traced step), the achieved GFLOP/s and its fraction of the best dense float32 matmul measured in
the same process (`peak_matmul_gflops`, the machine's practical peak at that moment).

`--mode=input` runs the stage's real input pipeline alone (the stage's own `dataset_fn`, epoch by
epoch as `trainer.fit` reads it) through a compiled loop that only touches each batch, so one
can tell whether tf.data or the step bounds training. It needs the data (it is the data).

Flags are those of `train.main` (`--dataset`, `--config`, `--config.x.y=...`, `--strategy`,
`--cpu_replicas`, `--data_dir`, `--model_dir`) plus the ones below. Everything but the JSON line
goes to stderr.
"""

import contextlib
import dataclasses
import json
import os
import statistics
import sys
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags

from train import cli
from train import main as train_main

FLAGS = flags.FLAGS
BENCH_STAGES = ('source', 'pixel', 'feature', 'task')
MODES = ('step', 'input')
flags.DEFINE_enum('mode', 'step', MODES, 'step: the compiled training step on synthetic '
                  'batches; input: the real input pipeline alone.')
flags.DEFINE_enum('precision', None, ['fp32', 'bf16'], 'Overrides config.train.precision.')
flags.DEFINE_integer('steps', 50, 'Timed steps (after warm-up), in calls of '
                     'config.train.steps_per_call steps.')
flags.DEFINE_integer('warmup', 2, 'Untimed calls before timing (the first traces/compiles).')
flags.DEFINE_list('peak_sizes', ['2048', '3072', '4096'], 'Square float32 matmul sizes whose '
                  'best GFLOP/s is the peak; empty skips the peak measurement.')
flags.DEFINE_integer('peak_repeats', 3, 'Timed repetitions of each peak matmul.')
flags.DEFINE_string('profile_dir', None, 'Step mode: writes a TensorFlow profiler trace of the '
                    'timed calls here (open it in TensorBoard\'s Profile tab). Profiling slows '
                    'the step, so do not use these timings for the table.')
flags.DEFINE_integer('examples_per_epoch', 0, 'Step mode: examples per epoch for schedules '
                     '(only the pixel learning-rate decay reads it); 0 = 100 batches.')
flags.DEFINE_enum('feature_gate', 'open', ['open', 'config'], 'Feature stage, step mode: '
                  '`open` forces the gate open so every step also updates f_T (fresh networks '
                  'would keep it mostly shut); `config` keeps config.feature.gate_threshold.')


def _log(*args):
  print(*args, file=sys.stderr, flush=True)


def synthetic_dataset_fn(example, global_batch_size):
  """A `dataset_fn` that repeats one batch (numpy structure, leading dim = global batch).

  Each replica gets its share of the global batch, as `pipeline.domain_dataset` would give it.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  def dataset_fn(input_context, epoch):
    del epoch
    per_replica = input_context.get_per_replica_batch_size(global_batch_size)
    batch = tf.nest.map_structure(lambda a: a[:per_replica], example)
    return tf.data.Dataset.from_tensors(batch).repeat()

  return dataset_fn


def synthetic_batch(image_shape, batch_size, num_classes, paired, seed=0):
  """Random images in [-1, 1] and labels: (images, labels), or ((xs, ys), (xt, yt)) if paired."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)

  def one():
    images = rng.uniform(-1.0, 1.0, (batch_size,) + tuple(image_shape)).astype(np.float32)
    return images, rng.integers(0, num_classes, batch_size).astype(np.int64)

  return (one(), one()) if paired else one()


def _task_source_spec(ctx):
  """The task/feature source side: G_ST's translation if `model_dir` has one, else the source."""
  from cycada_tf.data import translated  # pylint: disable=g-import-not-at-top
  from cycada_tf.stages import task  # pylint: disable=g-import-not-at-top
  if translated.is_complete(task.translated_source_dir(ctx)):
    return task.translated_source_spec(ctx)
  return ctx.pair.source


def build_stage(ctx, stage_name, num_train):
  """The stage's `trainer.Stage` from the training builders, with fresh networks.

  `num_train=None` makes the builders read the real domain sizes (input mode).
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from cycada_tf import models  # pylint: disable=g-import-not-at-top
  from cycada_tf.stages import common  # pylint: disable=g-import-not-at-top
  from cycada_tf.stages import feature  # pylint: disable=g-import-not-at-top
  from cycada_tf.stages import pixel  # pylint: disable=g-import-not-at-top
  from cycada_tf.stages import source  # pylint: disable=g-import-not-at-top

  strategy = ctx.strategy
  if stage_name in ('source', 'task'):
    spec = ctx.pair.source if stage_name == 'source' else _task_source_spec(ctx)
    with strategy.scope():
      classifier = common.new_classifier(ctx)
    return source.supervised_stage(ctx, stage_name, spec, classifier, num_train=num_train)
  if stage_name == 'pixel':
    with strategy.scope():
      classifier = common.new_classifier(ctx)
    stage, _, _ = pixel.build_stage(ctx, classifier, num_train=num_train, with_samples=False)
    return stage
  # feature: f_T, a frozen source encoder and D_feat, as `feature.run` builds them.
  with strategy.scope():
    f_t = common.new_classifier(ctx)
    source_encoder = common.new_classifier(ctx)
    source_encoder.trainable = False
    width = (ctx.config.model.num_classes
             if ctx.config.model.feature_discriminator_input == 'logits'
             else int(f_t(tf.zeros((1,) + ctx.image_shape))[1].shape[-1]))
    discriminator = common.build_network(models.build_feature_discriminator(), (width,))
  spec = _task_source_spec(ctx) if ctx.config.feature.from_stage == 'task' else ctx.pair.source
  stage, _ = feature.build_stage(ctx, f_t, source_encoder, discriminator, spec,
                                 feature.stage_name_for(ctx.config), num_train=num_train)
  return stage


def matmul_peak_gflops(sizes, repeats, dtype='float32'):
  """The best GFLOP/s of square `dtype` matmuls of the given sizes (2·n³ FLOPs each)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  best = 0.0
  for n in sizes:
    a = tf.random.uniform((n, n), dtype=tf.float32)
    b = tf.random.uniform((n, n), dtype=tf.float32)
    a, b = tf.cast(a, dtype), tf.cast(b, dtype)
    # One element of the product is fetched so the timing includes the whole matmul, not a copy.
    product = tf.function(lambda a=a, b=b: tf.matmul(a, b)[0, 0])
    product().numpy()
    for _ in range(repeats):
      start = time.perf_counter()
      product().numpy()
      best = max(best, 2.0 * n ** 3 / (time.perf_counter() - start) / 1e9)
  return best


def _windows(total_steps, steps_per_call):
  """Step counts of successive calls covering `total_steps` (the last may be shorter)."""
  chunk = max(1, min(steps_per_call, total_steps))
  counts = [chunk] * (total_steps // chunk)
  if total_steps % chunk:
    counts.append(total_steps % chunk)
  return counts


def bench_step(ctx, stage_name, train_config, steps, warmup, examples_per_epoch):
  """Times the compiled training step on synthetic data; returns the result dict."""
  import math  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from cycada_tf import flops  # pylint: disable=g-import-not-at-top
  from cycada_tf import trainer  # pylint: disable=g-import-not-at-top
  from cycada_tf.errors import UserError  # pylint: disable=g-import-not-at-top

  section = ctx.config[stage_name]
  batch_size = int(section.batch_size)
  stage = build_stage(ctx, stage_name, examples_per_epoch or 100 * batch_size)
  example = synthetic_batch(ctx.image_shape, batch_size, ctx.config.model.num_classes,
                            paired=stage_name in ('pixel', 'feature'), seed=ctx.seed)
  stage = dataclasses.replace(stage, dataset_fn=synthetic_dataset_fn(example, batch_size))
  run_steps = trainer.make_run_steps(stage, ctx.strategy, train_config)
  iterator = trainer.epoch_iterator(stage, ctx.strategy, epoch=0)

  def call(num_steps):
    # As `trainer.fit` does after every call: fetch the sums (this waits for the steps).
    sums = run_steps(iterator, tf.constant(num_steps, dtype=tf.int64))
    return {k: float(v) for k, v in sums.items()}

  counts = _windows(steps, train_config.steps_per_call)
  start = time.perf_counter()
  try:
    for _ in range(max(warmup, 1)):
      call(counts[0])
  except tf.errors.UnimplementedError as e:
    if 'deterministic' not in str(e):
      raise
    raise UserError(
        'jit_compile=true cannot compile this step: train.main enables op determinism and '
        'XLA has no deterministic MaxPool gradient (LeNet, i.e. the 28x28 pairs). Use '
        '--config.train.jit_compile=false, or a DTN config (svhn_mnist).') from None
  _log(f'[bench] warm-up ({max(warmup, 1)} calls, incl. tracing) took '
       f'{time.perf_counter() - start:.1f} s')
  rates, seconds, metrics = [], 0.0, {}
  if FLAGS.profile_dir:
    tf.profiler.experimental.start(FLAGS.profile_dir)
  for count in counts:
    start = time.perf_counter()
    metrics = call(count)
    elapsed = time.perf_counter() - start
    seconds += elapsed
    rates.append(count * batch_size / elapsed)
  if FLAGS.profile_dir:
    tf.profiler.experimental.stop()

  graph = run_steps.get_concrete_function(
      iterator, tf.constant(counts[0], dtype=tf.int64)).graph
  flops_per_step = flops.graph_flops(graph)
  examples_per_second = statistics.median(rates)
  return {
      'global_batch_size': batch_size,
      'steps_per_call': counts[0],
      'timed_steps': sum(counts),
      'timed_seconds': round(seconds, 4),
      'examples_per_second': examples_per_second,
      'examples_per_second_windows': [round(r, 2) for r in rates],
      'flops_per_step': flops_per_step,
      'flops_per_example': flops_per_step / batch_size,
      'flops_source': flops.SOURCE,
      'achieved_gflops': flops_per_step * examples_per_second / batch_size / 1e9,
      'metrics_finite': all(math.isfinite(v) for v in metrics.values()),
      'last_call_metrics': {k: v / counts[-1] for k, v in metrics.items()},
  }


def bench_input(ctx, stage_name, train_config, steps, warmup):
  """Examples/s of the stage's real input pipeline, read epoch by epoch as `fit` reads it."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from cycada_tf import trainer  # pylint: disable=g-import-not-at-top

  stage = build_stage(ctx, stage_name, num_train=None)
  strategy = ctx.strategy

  @tf.function
  def drain(iterator, num_steps):
    """Reads `num_steps` batches in a compiled loop; one scalar per batch keeps them alive."""
    def touch(batch):
      return tf.cast(tf.reduce_sum(tf.nest.flatten(batch)[-1][:1]), tf.float32)

    total = tf.constant(0.0)
    for _ in tf.range(num_steps):
      total += strategy.reduce(tf.distribute.ReduceOp.SUM,
                               strategy.run(touch, args=(next(iterator),)), axis=None)
    return total

  def epochs_from(epoch):
    """As `fit` groups them: the next `trainer.EPOCHS_PER_ITERATOR` epochs share one iterator."""
    return trainer.epoch_iterator(stage, strategy, epoch,
                                  num_epochs=trainer.EPOCHS_PER_ITERATOR)

  state = {'epoch': 0, 'left': stage.steps_per_epoch, 'iterator': epochs_from(0)}

  def read(num_steps):
    """Reads `num_steps` batches, moving on to the next epoch (and iterator) as `fit` does."""
    while num_steps:
      if not state['left']:
        state['epoch'] += 1
        state['left'] = stage.steps_per_epoch
        if state['epoch'] % trainer.EPOCHS_PER_ITERATOR == 0:
          state['iterator'] = epochs_from(state['epoch'])
      count = min(num_steps, state['left'])
      float(drain(state['iterator'], tf.constant(count, dtype=tf.int64)))
      state['left'] -= count
      num_steps -= count

  counts = _windows(steps, train_config.steps_per_call)
  for _ in range(max(warmup, 1)):
    read(counts[0])
  rates, seconds = [], 0.0
  for count in counts:
    start = time.perf_counter()
    read(count)
    elapsed = time.perf_counter() - start
    seconds += elapsed
    rates.append(count * stage.global_batch_size / elapsed)
  return {
      'global_batch_size': stage.global_batch_size,
      'steps_per_call': counts[0],
      'steps_per_epoch': stage.steps_per_epoch,
      'timed_steps': sum(counts),
      'timed_seconds': round(seconds, 4),
      'examples_per_second': statistics.median(rates),
      'examples_per_second_overall': sum(counts) * stage.global_batch_size / seconds,
      'examples_per_second_windows': [round(r, 2) for r in rates],
  }


def run():
  """Parses the flags, runs the benchmark and returns the JSON-ready result."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from cycada_tf import distribute  # pylint: disable=g-import-not-at-top
  from cycada_tf import precision  # pylint: disable=g-import-not-at-top
  from cycada_tf import trainer  # pylint: disable=g-import-not-at-top
  from cycada_tf.errors import UserError  # pylint: disable=g-import-not-at-top

  if FLAGS.stage not in BENCH_STAGES:
    raise UserError(f'--stage={FLAGS.stage!r} cannot be benchmarked; valid: '
                    f'{", ".join(BENCH_STAGES)}.')
  if FLAGS.steps < 1:
    raise UserError(f'--steps={FLAGS.steps} must be at least 1.')
  with contextlib.redirect_stdout(sys.stderr):  # train.main's start-up line
    ctx = train_main.build_context()
  config = ctx.config
  if FLAGS.precision:
    config.train.precision = FLAGS.precision
  if FLAGS.stage == 'feature' and FLAGS.feature_gate == 'open' and FLAGS.mode == 'step':
    config.feature.gate_threshold = -1.0
  train_config = trainer.TrainConfig.from_config(config.train)
  result = {
      'stage': FLAGS.stage,
      'mode': FLAGS.mode,
      'pair': ctx.pair.name,
      'image_shape': list(ctx.image_shape),
      'precision': config.train.precision,
      'jit_compile': bool(train_config.jit_compile),
      'strategy': distribute.describe(ctx.strategy),
      'replicas': ctx.strategy.num_replicas_in_sync,
      'tensorflow': tf.__version__,
  }
  with precision.policy_scope(config.train.precision), contextlib.redirect_stdout(sys.stderr):
    if FLAGS.mode == 'input':
      result.update(bench_input(ctx, FLAGS.stage, train_config, FLAGS.steps, FLAGS.warmup))
      return result
    result.update(bench_step(ctx, FLAGS.stage, train_config, FLAGS.steps, FLAGS.warmup,
                             FLAGS.examples_per_epoch))
  sizes = [int(s) for s in FLAGS.peak_sizes]
  if sizes:
    peak = matmul_peak_gflops(sizes, FLAGS.peak_repeats)
    result.update(peak_matmul_gflops=peak, peak_matmul_sizes=sizes,
                  fraction_of_peak=result['achieved_gflops'] / peak)
    if config.train.precision == 'bf16':
      # Context for bf16 runs: what this CPU's bf16 matmul reaches (fraction_of_peak stays
      # relative to float32, the fixed yardstick).
      result['peak_matmul_gflops_bf16'] = matmul_peak_gflops(sizes, FLAGS.peak_repeats,
                                                             'bfloat16')
  return result


def main(argv):
  result = cli.run_command(argv, run, example_flag='--stage=pixel')
  print(json.dumps(result, sort_keys=True), flush=True)


if __name__ == '__main__':
  flags.FLAGS.set_default('stage', 'source')
  app.run(main)
