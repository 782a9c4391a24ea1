r"""Speed of one stage's real training step (or of its input pipeline), as one JSON line.

    python -m train.bench --stage=pixel --dataset=svhn_mnist [--precision=bf16] [--steps=100]
    python -m train.bench --stage=pixel --dataset=svhn_mnist --precision=both
    python -m train.bench --stage=source --mode=input

`--mode=step` (default) builds the stage exactly as training does (same builders, models, losses,
optimizers, strategy and the trainer's compiled multi-step function, `trainer.make_run_steps`)
with freshly initialised networks, feeds it one synthetic batch of the config's shape repeated
(`Dataset.from_tensors(batch).repeat()` per replica, so input costs nothing), and times
`--steps` steps in calls of `config.train.steps_per_call` after `--warmup` calls. It reports
the median examples/s over those calls, the step's FLOPs (`cycada_tf.flops`, counted on the
traced step), the achieved GFLOP/s and its fraction of the best dense float32 matmul measured in
the same process (`peak_matmul_gflops`, the machine's practical peak at that moment).
`--precision=both` builds the step twice, in fp32 and in bf16, and alternates their timed calls,
reporting each under its own key and `bf16_speedup`, the median ratio over pairs of calls: the
one figure for bf16's gain that the machine's slow speed drift does not bias.

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

from absl import flags

from train import cli
from train import main as train_main

FLAGS = flags.FLAGS
# CPU flags that decide speed, reported with every result (machines differ between runs).
SPEED_FLAGS = frozenset({'avx2', 'fma', 'avx512f', 'avx512_bf16', 'amx_bf16', 'amx_tile',
                         'avx512_vnni'})
MODES = ('step', 'input')
flags.DEFINE_enum('mode', 'step', MODES, 'step: the compiled training step on synthetic '
                  'batches; input: the real input pipeline alone.')
flags.DEFINE_enum('precision', None, ['fp32', 'bf16', 'both'], 'Overrides '
                  'config.train.precision. `both` (step mode): builds the step in fp32 and in '
                  'bf16 and times their calls alternately in one process, so the machine\'s '
                  'drift cannot bias bf16_speedup.')
flags.DEFINE_enum('kernels', None, ['auto', 'stock', 'cpu_tuned', 'both'], 'Overrides '
                  'config.train.kernels. `both` (step mode): builds the step with stock and '
                  'with cpu_tuned kernels and times their calls alternately, reporting '
                  'cpu_tuned_speedup.')
flags.DEFINE_integer('steps', 50, 'Timed steps (after warm-up), in calls of '
                     'config.train.steps_per_call steps.')
flags.DEFINE_integer('warmup', 2, 'Untimed calls before timing (the first traces/compiles).')
flags.DEFINE_list('peak_sizes', ['2048', '3072', '4096'], 'Square float32 matmul sizes whose '
                  'best GFLOP/s is the peak; empty skips the peak measurement.')
flags.DEFINE_integer('peak_repeats', 3, 'Timed repetitions of each peak matmul.')
flags.DEFINE_string('profile_dir', None, 'Step mode: writes a TensorFlow profiler trace of the '
                    'timed calls here (open it in TensorBoard\'s Profile tab; with '
                    '--precision=both one per precision, in subdirectories) and adds '
                    '`op_seconds_by_type`, the seconds per op type. Profiling slows the step, so '
                    'do not use these timings for the table.')
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


def synthetic_batch(image_shape, batch_size, num_classes, paired, seed=0, per_pixel=False):
  """Random images in [-1, 1] and labels: (images, labels), or ((xs, ys), (xt, yt)) if paired.

  `per_pixel`: uint8 label maps [B, H, W] (segmentation) instead of one int64 label per image.
  """
  import numpy as np  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)

  def one():
    images = rng.uniform(-1.0, 1.0, (batch_size,) + tuple(image_shape)).astype(np.float32)
    if per_pixel:
      return images, rng.integers(0, num_classes, images.shape[:3]).astype(np.uint8)
    return images, rng.integers(0, num_classes, batch_size).astype(np.int64)

  return (one(), one()) if paired else one()


def build_stage(ctx, stage_name, num_train):
  """The stage's `trainer.Stage` from its own `build`, with fresh networks (as training builds
  them, but needing no finished stage). `num_train=None`: the real domain sizes (input mode)."""
  from cycada_tf import workflow  # pylint: disable=g-import-not-at-top
  stage, _ = workflow.stage_builder(stage_name)(ctx, fresh=True, num_train=num_train)
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


@dataclasses.dataclass
class PreparedStep:
  """A stage's compiled step, ready to time: `call(n)` runs n steps and returns the metric sums."""
  call: object
  flops_per_step: float
  batch_size: int
  steps_per_call: int


def prepare_step(ctx, stage_name, train_config, counts, warmup, examples_per_epoch):
  """Builds the stage's compiled step on synthetic data and warms it up (traces it).

  Call inside the precision's policy scope: layers take their dtype policy when built.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from cycada_tf import flops  # pylint: disable=g-import-not-at-top
  from cycada_tf import trainer  # pylint: disable=g-import-not-at-top
  from cycada_tf.errors import UserError  # pylint: disable=g-import-not-at-top

  batch_size = int(ctx.config[stage_name].batch_size)
  stage = build_stage(ctx, stage_name, examples_per_epoch or 100 * batch_size)
  from cycada_tf.stages import pixel  # pylint: disable=g-import-not-at-top
  image_shape = pixel.stage_image_shape(ctx) if stage_name == 'pixel' else ctx.image_shape
  example = synthetic_batch(image_shape, batch_size, ctx.config.model.num_classes,
                            paired=stage_name in ('pixel', 'feature'), seed=ctx.seed,
                            per_pixel=ctx.is_segmentation)
  stage = dataclasses.replace(stage, dataset_fn=synthetic_dataset_fn(example, batch_size))
  run_steps = trainer.make_run_steps(stage, ctx.strategy, train_config)
  iterator = trainer.epoch_iterator(stage, ctx.strategy, epoch=0)

  def call(num_steps):
    # As `trainer.fit` does after every call: fetch the sums (this waits for the steps).
    sums = run_steps(iterator, tf.constant(num_steps, dtype=tf.int64))
    return {k: float(v) for k, v in sums.items()}

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
  graph = run_steps.get_concrete_function(
      iterator, tf.constant(counts[0], dtype=tf.int64)).graph
  return PreparedStep(call=call, flops_per_step=flops.graph_flops(graph, count_loops=True),
                      batch_size=batch_size, steps_per_call=counts[0])


def step_result(prepared, counts, timings, metrics):
  """The JSON fields of one precision's timed calls (`timings`: seconds of each call)."""
  import math  # pylint: disable=g-import-not-at-top
  from cycada_tf import flops  # pylint: disable=g-import-not-at-top
  rates = [count * prepared.batch_size / t for count, t in zip(counts, timings)]
  examples_per_second = statistics.median(rates)
  return {
      'global_batch_size': prepared.batch_size,
      'steps_per_call': prepared.steps_per_call,
      'timed_steps': sum(counts),
      'timed_seconds': round(sum(timings), 4),
      'examples_per_second': examples_per_second,
      'examples_per_second_windows': [round(r, 2) for r in rates],
      'flops_per_step': prepared.flops_per_step,
      'flops_per_example': prepared.flops_per_step / prepared.batch_size,
      'flops_source': flops.SOURCE,
      'achieved_gflops': prepared.flops_per_step * examples_per_second / prepared.batch_size / 1e9,
      'metrics_finite': all(math.isfinite(v) for v in metrics.values()),
      'last_call_metrics': {k: v / counts[-1] for k, v in metrics.items()},
  }


def time_calls(prepared_steps, counts):
  """Times each call of `counts`, for every prepared step in turn, alternating their order.

  With several steps (`--precision=both`), call k runs them in one order and call k+1 in the
  reverse one, so slow drifts of the machine's speed (over minutes a CPU can drift by more than
  the effect being measured; see docs/performance.md) hit both alike and their ratio per pair of
  calls stays fair. Returns, per step, the list of call durations and the last call's metric sums.
  """
  timings = [[] for _ in prepared_steps]
  metrics = [{} for _ in prepared_steps]
  order = list(range(len(prepared_steps)))
  for count in counts:
    for i in order:
      start = time.perf_counter()
      metrics[i] = prepared_steps[i].call(count)
      timings[i].append(time.perf_counter() - start)
    order.reverse()
  return timings, metrics


def op_seconds_by_type(profile_dir, top=15):
  """Seconds each TF op type ran in the newest profiler trace under `profile_dir`, longest first.

  Self time on the executor threads (`tf_Compute` lines of the host plane): an event's duration
  minus that of the events nested in it (a `While` op is not charged for its body's ops). With
  inter-op parallelism two ops can run at once, so the total can exceed wall time; shares between
  op types are what to compare. Ops past the first `top` are summed as 'other'.
  """
  import collections  # pylint: disable=g-import-not-at-top
  import glob  # pylint: disable=g-import-not-at-top
  from tensorflow.tsl.profiler.protobuf import xplane_pb2  # pylint: disable=g-import-not-at-top

  paths = sorted(glob.glob(os.path.join(profile_dir, 'plugins', 'profile', '*', '*.xplane.pb')))
  if not paths:
    return {}
  space = xplane_pb2.XSpace()
  with open(paths[-1], 'rb') as f:
    space.ParseFromString(f.read())
  picoseconds = collections.Counter()
  for plane in space.planes:
    for line in plane.lines:
      if not line.name.startswith('tf_Compute'):
        continue
      enclosing = []  # (end, op type) of the events the current one is nested in
      for event in sorted(line.events, key=lambda e: e.offset_ps):
        op_type = plane.event_metadata[event.metadata_id].name.rsplit(':', 1)[-1]
        while enclosing and enclosing[-1][0] <= event.offset_ps:
          enclosing.pop()
        if enclosing:
          picoseconds[enclosing[-1][1]] -= event.duration_ps
        picoseconds[op_type] += event.duration_ps
        enclosing.append((event.offset_ps + event.duration_ps, op_type))
  ranked = picoseconds.most_common()
  seconds = {name: round(ps / 1e12, 4) for name, ps in ranked[:top]}
  if len(ranked) > top:
    seconds['other'] = round(sum(ps for _, ps in ranked[top:]) / 1e12, 4)
  return seconds


def profiled_calls(prepared_steps, counts, names):
  """As `time_calls`, under the profiler: one trace per step (precision), its calls in a block.

  Each precision gets its own trace (`--profile_dir`/NAME with several) and its op-type
  breakdown; profiling slows the step, so these timings are not for the table.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  timings, metrics, breakdowns = [], [], []
  for prepared, name in zip(prepared_steps, names):
    logdir = FLAGS.profile_dir if len(names) == 1 else os.path.join(FLAGS.profile_dir, name)
    tf.profiler.experimental.start(logdir)
    try:
      (timing,), (metric,) = time_calls([prepared], counts)
    finally:
      tf.profiler.experimental.stop()
    timings.append(timing)
    metrics.append(metric)
    breakdowns.append(op_seconds_by_type(logdir))
  return timings, metrics, breakdowns


def variant_name(precision_name, kernel_path, precisions, kernel_paths):
  """A timed variant's key: its precision, its kernel path, or both when both vary."""
  parts = ([precision_name] if len(precisions) > 1 else []) + (
      [kernel_path] if len(kernel_paths) > 1 else [])
  return '_'.join(parts)


def bench_step(ctx, stage_name, train_config, precisions, steps, warmup, examples_per_epoch,
               kernel_paths=('cpu_tuned',)):
  """Times the compiled step on synthetic data in each precision × kernel path; the result.

  One variant: its fields at the top level. Several: one sub-dict per variant (`fp32`, `bf16`,
  `stock`, `cpu_tuned`, or `fp32_stock` ... when both vary), timed alternately (`time_calls`),
  plus `bf16_speedup` (bf16's examples/s over fp32's) and `cpu_tuned_speedup` (cpu_tuned's over
  stock's), each the median over pairs of calls (per kernel path / per precision when both vary).
  """
  from cycada_tf import workflow  # pylint: disable=g-import-not-at-top
  counts = _windows(steps, train_config.steps_per_call)
  variants = [(p, k) for p in precisions for k in kernel_paths]
  names = [variant_name(p, k, precisions, kernel_paths) for p, k in variants]
  prepared = []
  for precision_name, kernel_path in variants:
    with workflow.stage_scope(stage_name, ctx, precision_name, kernel_path):
      prepared.append(prepare_step(ctx, stage_name, train_config, counts, warmup,
                                   examples_per_epoch))
  if FLAGS.profile_dir:
    timings, metrics, breakdowns = profiled_calls(prepared, counts, names)
  else:
    timings, metrics = time_calls(prepared, counts)
  results = {name: step_result(p, counts, t, m)
             for name, p, t, m in zip(names, prepared, timings, metrics)}
  for name, (precision_name, kernel_path) in zip(names, variants):
    results[name]['kernels'] = kernel_path
  if FLAGS.profile_dir:
    for name, breakdown in zip(names, breakdowns):
      results[name]['op_seconds_by_type'] = breakdown
  if len(variants) == 1:
    return results[names[0]]
  by_variant = dict(zip(variants, timings))

  def paired(key, slow, fast, others, make):
    for other in others:
      ratios = [a / b for a, b in zip(by_variant[make(slow, other)],
                                      by_variant[make(fast, other)])]
      suffix = f'_{other}' if len(others) > 1 else ''
      results[f'{key}{suffix}'] = statistics.median(ratios)
      results[f'{key}_windows{suffix}'] = [round(r, 3) for r in ratios]

  if len(precisions) > 1:
    paired('bf16_speedup', 'fp32', 'bf16', kernel_paths, lambda p, k: (p, k))
  if len(kernel_paths) > 1:
    paired('cpu_tuned_speedup', 'stock', 'cpu_tuned', precisions, lambda k, p: (p, k))
  return results


def bench_input(ctx, stage_name, train_config, steps, warmup):
  """Examples/s of the stage's real input pipeline, read epoch by epoch as `fit` reads it."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from cycada_tf import trainer  # pylint: disable=g-import-not-at-top

  stage = build_stage(ctx, stage_name, num_train=None)
  strategy = ctx.strategy
  per_iterator = max(1, train_config.epochs_per_iterator)

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
    """As `fit` groups them: the next `train.epochs_per_iterator` epochs share one iterator."""
    return trainer.epoch_iterator(stage, strategy, epoch, num_epochs=per_iterator)

  state = {'epoch': 0, 'left': stage.steps_per_epoch, 'iterator': epochs_from(0)}

  def read(num_steps):
    """Reads `num_steps` batches, moving on to the next epoch (and iterator) as `fit` does."""
    while num_steps:
      if not state['left']:
        state['epoch'] += 1
        state['left'] = stage.steps_per_epoch
        if state['epoch'] % per_iterator == 0:
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
  from cycada_tf import stage_table  # pylint: disable=g-import-not-at-top
  from cycada_tf.errors import check_choice  # pylint: disable=g-import-not-at-top
  # Before TensorFlow loads, so a mistyped stage fails at once.
  check_choice('--stage', FLAGS.stage, stage_table.TRAINABLE_STAGES,
               problem=' cannot be benchmarked')
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from cycada_tf import distribute  # pylint: disable=g-import-not-at-top
  from cycada_tf import kernels  # pylint: disable=g-import-not-at-top
  from cycada_tf import precision  # pylint: disable=g-import-not-at-top
  from cycada_tf import trainer  # pylint: disable=g-import-not-at-top
  from cycada_tf.errors import UserError  # pylint: disable=g-import-not-at-top
  from cycada_tf.errors import check_positive  # pylint: disable=g-import-not-at-top
  from cycada_tf import workflow  # pylint: disable=g-import-not-at-top
  check_positive('--steps', FLAGS.steps)
  if FLAGS.precision == 'both' and FLAGS.mode == 'input':
    raise UserError('--precision=both is for --mode=step: the input pipeline does not depend '
                    'on the precision.')
  if FLAGS.kernels == 'both' and FLAGS.mode == 'input':
    raise UserError('--kernels=both is for --mode=step: the input pipeline does not depend '
                    'on the kernels.')
  with contextlib.redirect_stdout(sys.stderr):  # train.main's start-up line
    ctx = train_main.build_context(training_run=False, check_data=FLAGS.mode == 'input')
  config = ctx.config
  if FLAGS.precision == 'both':
    precisions = ['fp32', 'bf16']
  else:
    if FLAGS.precision:
      config.train.precision = FLAGS.precision
    precisions = [config.train.precision]
  if FLAGS.kernels == 'both':
    kernel_paths = ['stock', 'cpu_tuned']
  else:
    if FLAGS.kernels:
      config.train.kernels = FLAGS.kernels
    kernel_paths = [kernels.resolve(config.train.get('kernels', 'auto'), ctx.strategy)]
  warning = precision.bf16_warning(ctx.strategy) if 'bf16' in precisions else None
  if warning:
    _log(f'[bench] {warning}')
  if FLAGS.stage == 'feature' and FLAGS.feature_gate == 'open' and FLAGS.mode == 'step':
    config.feature.gate_threshold = -1.0
  train_config = trainer.TrainConfig.from_config(config.train)
  result = {
      'stage': FLAGS.stage,
      'mode': FLAGS.mode,
      'pair': ctx.pair.name,
      'image_shape': list(ctx.image_shape),
      'precision': FLAGS.precision if FLAGS.precision == 'both' else config.train.precision,
      'kernels': 'both' if len(kernel_paths) > 1 else kernel_paths[0],
      'cpu_flags': sorted(kernels.cpu_flags() & SPEED_FLAGS),
      'jit_compile': bool(train_config.jit_compile),
      'strategy': distribute.describe(ctx.strategy),
      'replicas': ctx.strategy.num_replicas_in_sync,
      'tensorflow': tf.__version__,
  }
  if 'bf16' in precisions and 'cpu_tuned' in kernel_paths:
    # The one cpu_tuned choice that follows the CPU model (cycada_tf/kernels.py).
    result['filter_gradient'] = kernels.resolve_filter_gradient(
        config.train.get('filter_gradient', 'auto'))
  with contextlib.redirect_stdout(sys.stderr):
    if FLAGS.mode == 'input':
      with workflow.stage_scope(FLAGS.stage, ctx, config.train.precision, kernel_paths[0]):
        result.update(bench_input(ctx, FLAGS.stage, train_config, FLAGS.steps, FLAGS.warmup))
      return result
    result.update(bench_step(ctx, FLAGS.stage, train_config, precisions, FLAGS.steps,
                             FLAGS.warmup, FLAGS.examples_per_epoch, kernel_paths))
  sizes = [int(s) for s in FLAGS.peak_sizes]
  if sizes:
    peak = matmul_peak_gflops(sizes, FLAGS.peak_repeats)
    result.update(peak_matmul_gflops=peak, peak_matmul_sizes=sizes)
    # fraction_of_peak is relative to float32 matmuls, the fixed yardstick, in both precisions.
    variants = [variant_name(p, k, precisions, kernel_paths)
                for p in precisions for k in kernel_paths]
    for fields in [result[v] for v in variants] if len(variants) > 1 else [result]:
      fields['fraction_of_peak'] = fields['achieved_gflops'] / peak
    if 'bf16' in precisions:
      # Context for bf16 runs: what this CPU's bf16 matmul reaches.
      result['peak_matmul_gflops_bf16'] = matmul_peak_gflops(sizes, FLAGS.peak_repeats,
                                                             'bfloat16')
  return result


def main(argv):
  result = cli.run_command(argv, run, example_flag='--stage=pixel')
  print(json.dumps(result, sort_keys=True), flush=True)


if __name__ == '__main__':
  flags.FLAGS.set_default('stage', 'source')
  cli.run_main(main)
