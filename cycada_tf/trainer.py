"""The only training loop: every stage (source, pixel, task, feature, ...) runs through `fit`.

The loop follows the orbit controller idea: restore the latest checkpoint, run compiled chunks of
steps, and between chunks summarise, print progress, guard against NaN/Inf and checkpoint. It knows
nothing about GANs or digits; a stage hands it a `Stage` (its models, optimizers, per-replica step
and input) and gets back the trained models.

A stage gives either a `replica_step` (the common case: run on every replica, results summed) or
a `cross_replica_step(batch)` that calls `strategy.run` itself, for steps whose control flow must
sit outside the replicas (the feature stage's gated update: `tf.cond` around a synchronising
optimizer update is only allowed in cross-replica context).

Conventions a stage's `replica_step` must follow:
- It runs in replica context on one replica's share of the global batch.
- Every value it returns is that replica's share of a global quantity: losses averaged with
  `tf.nn.compute_average_loss(..., global_batch_size=...)`, counts divided by the global batch.
  The trainer sums the values across replicas, so the result does not depend on the replica count.
"""

import dataclasses
import hashlib
import json
import math
import os
import shutil
import time
from typing import Callable, Optional

import numpy as np
import tensorflow as tf

from cycada_tf import distribute
from cycada_tf.errors import UserError


class NonFiniteLossError(UserError):
  """A loss became NaN or Inf; training stopped before saving the broken weights."""


class Interrupted(KeyboardInterrupt):
  """Ctrl-C during training, with the message that says what was kept and how to resume.

  A `KeyboardInterrupt` still (so nothing that stops on Ctrl-C stops catching it); the command
  line prints its message as one line instead of a traceback.
  """


@dataclasses.dataclass
class Stage:
  """Everything the trainer needs to know about one stage."""
  name: str
  models: dict
  optimizers: dict
  replica_step: Optional[Callable]  # batch -> dict[str, scalar tensor], in replica context
  dataset_fn: Callable  # (tf.distribute.InputContext, epoch) -> per-replica tf.data.Dataset
  steps_per_epoch: int
  epochs: int
  global_batch_size: int
  # Extra trackables checkpointed with the models (image pools, gate counters, ...).
  extra_state: dict = dataclasses.field(default_factory=dict)
  # Called on every worker after each epoch with the epoch's mean metrics (identical everywhere,
  # being cross-replica sums); a returned string stops training early and is the recorded reason.
  on_epoch_end: Optional[Callable] = None
  # Called on the chief inside the summary writer at every log step (image summaries, ...).
  on_log: Optional[Callable] = None
  # Stops after this many steps in total (tests, benches); 0 runs every epoch.
  max_steps: int = 0
  # Alternative to `replica_step`: distributed batch -> dict of cross-replica scalars.
  cross_replica_step: Optional[Callable] = None
  # `on_epoch_end` runs after every `epoch_end_every`-th epoch and after the last, with the means
  # over the epochs since its previous call. Above 1, compiled calls run across the epoch ends
  # in between, which per-epoch work (the monitoring of short epochs) would otherwise cut.
  epoch_end_every: int = 1

  @property
  def epoch_end_steps(self):
    """Steps between two `on_epoch_end` calls."""
    return self.steps_per_epoch * max(1, int(self.epoch_end_every))

  def step_in_cross_replica_context(self, strategy, distributed_batch):
    """One training step from cross-replica context; returns global scalar metrics."""
    if self.cross_replica_step is not None:
      return self.cross_replica_step(distributed_batch)
    per_replica = strategy.run(self.replica_step, args=(distributed_batch,))
    return {k: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None)
            for k, v in per_replica.items()}


@dataclasses.dataclass
class TrainConfig:
  log_every_steps: int = 50
  checkpoint_every_steps: int = 200
  steps_per_call: int = 10
  jit_compile: bool = False
  max_checkpoints_to_keep: int = 2
  # Epochs read through one distributed iterator. Creating and destroying an iterator has a
  # fixed cost that dominated stages with short epochs (a UCI epoch is 11 steps; timings in
  # docs/performance.md); tests set it low so that a short run crosses iterator groups.
  epochs_per_iterator: int = 10

  @classmethod
  def from_config(cls, config):
    return cls(**{f.name: config[f.name] for f in dataclasses.fields(cls) if f.name in config})


@dataclasses.dataclass
class FitResult:
  steps: int
  epochs_completed: int
  stop_reason: str
  final_metrics: dict  # mean of each step metric over the last logged window
  seconds: float
  # Throughput after the first call (which traces and compiles), over everything `fit` does:
  # steps, logging, summaries, checkpoints, epoch starts. `train.bench` times the bare step;
  # the two are comparable. None when the run made fewer than two calls.
  examples_per_second: float = None
  first_call_seconds: float = None


def random_state(model):
  """The state variables of `model`'s random number generators (its dropout layers' seeds).

  Keras keeps each `SeedGenerator`'s state in a variable that `model.variables` lists but that is
  no attribute of the model, so `tf.train.Checkpoint(model=...)` does not save it: a resumed run
  would draw its dropout masks from the seed a fresh run starts with, and end elsewhere than the
  uninterrupted run. Keras names every such variable `seed_generator_state`.
  """
  return [v for v in model.variables if v.name == 'seed_generator_state']


def checkpoint_for(models=None, optimizers=None, extra_state=None, step=None,
                   with_random_state=False):
  """The checkpoint layout every stage shares, so a later stage can restore one model by name.

  `with_random_state` adds each model's dropout seed states (`random_state`) under
  `random_<name>`: training saves and restores them so that a resumed run draws the masks the
  uninterrupted run would; a later stage that only loads a model leaves them out.
  """
  items = {}
  for name, model in (models or {}).items():
    items[f'model_{name}'] = model
    states = random_state(model) if with_random_state else []
    if states:
      items[f'random_{name}'] = tf.train.Checkpoint(
          **{f'seed_{i}': state for i, state in enumerate(states)})
  for name, optimizer in (optimizers or {}).items():
    items[f'optimizer_{name}'] = optimizer
  for name, state in (extra_state or {}).items():
    items[f'state_{name}'] = state
  if step is not None:
    items['step'] = step
  return tf.train.Checkpoint(**items)


def checkpoint_dir(stage_dir):
  return os.path.join(stage_dir, 'checkpoints')


def remove_unfinished_saves(directory):
  """Deletes the `<prefix>_temp/` directories of checkpoint saves that a kill interrupted.

  TensorFlow writes a checkpoint into `ckpt-N_temp/` and then merges it into `ckpt-N.*`; a
  process killed in between leaves the temporary directory, which no restore reads. Returns the
  names removed.
  """
  removed = []
  if not os.path.isdir(directory):
    return removed
  for name in sorted(os.listdir(directory)):
    path = os.path.join(directory, name)
    if name.endswith('_temp') and os.path.isdir(path):
      shutil.rmtree(path, ignore_errors=True)
      removed.append(name)
  return removed


def write_json_atomically(path, payload):
  """Writes JSON through a temporary file and a rename, so readers never see half a file."""
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  tmp = f'{path}.tmp-{os.getpid()}'
  with open(tmp, 'w') as f:
    json.dump(payload, f, indent=2, sort_keys=True)
    f.write('\n')
  os.replace(tmp, path)


def _format_seconds(seconds):
  seconds = int(max(seconds, 0))
  hours, rest = divmod(seconds, 3600)
  minutes, seconds = divmod(rest, 60)
  return f'{hours:d}:{minutes:02d}:{seconds:02d}'


class _Progress:
  """Prints `stage step/total (pct) | metrics | examples/s | ETA` lines.

  The ETA extrapolates the rate since `restart` (called after the first compiled call): the
  first call also traces and compiles, and counting it would overstate the time left.
  """

  def __init__(self, stage_name, total_steps, global_batch_size, first_step):
    self.stage_name = stage_name
    self.total_steps = total_steps
    self.global_batch_size = global_batch_size
    self.last_time = time.perf_counter()
    self.last_step = first_step
    self.start_time = self.last_time
    self.start_step = first_step

  def restart(self, step):
    """Measures the overall rate from here on (see the class docstring)."""
    self.start_time, self.start_step = time.perf_counter(), step
    self.last_time, self.last_step = self.start_time, step

  def line(self, step, means):
    """The progress line at `step` and the examples/s since the last line (None if unknown)."""
    now = time.perf_counter()
    rate = None
    if step > self.last_step:
      rate = (step - self.last_step) * self.global_batch_size / max(now - self.last_time, 1e-9)
    overall = (step - self.start_step) / max(now - self.start_time, 1e-9)
    eta = (self.total_steps - step) / overall if overall > 0 else float('inf')
    if step >= self.total_steps:
      eta = 0.0
    self.last_time, self.last_step = now, step
    shown = ' '.join(f'{k}={v:.4g}' for k, v in sorted(means.items()))
    pct = 100.0 * step / max(self.total_steps, 1)
    eta_text = _format_seconds(eta) if math.isfinite(eta) else '? (after the first call)'
    speed = f'{rate:.0f} examples/s' if rate is not None else 'first call (tracing, compiling)'
    return (f'[{self.stage_name}] step {step}/{self.total_steps} ({pct:.0f}%) | {shown} | '
            f'{speed} | ETA {eta_text}'), rate


def make_run_steps(stage, strategy, train_config):
  """The compiled function `fit` calls: (distributed iterator, num_steps) → summed metrics.

  Public so that `train.bench` times exactly what training runs. With `jit_compile`, XLA
  compiles one step (the replica step, or the whole cross-replica step), not the loop around it:
  the loop reads the input iterator, and `IteratorGetNext` has no XLA kernel.
  """
  if train_config.jit_compile:
    if stage.cross_replica_step is not None:
      # Needs a strategy whose cross-replica reductions XLA can compile (one replica).
      stage = dataclasses.replace(
          stage, cross_replica_step=tf.function(stage.cross_replica_step, jit_compile=True))
    else:
      stage = dataclasses.replace(
          stage, replica_step=tf.function(stage.replica_step, jit_compile=True))
  step_fn = tf.function(lambda batch: stage.step_in_cross_replica_context(strategy, batch))

  @tf.function
  def run_steps(iterator, num_steps):
    """Runs `num_steps` compiled steps and returns each metric summed over them.

    The sums start from zeros shaped like the step's outputs, read off its traced signature, so
    the step is called in one place only. Calling it once before the loop (to get that
    structure) put two copies of the step in the graph that Grappler optimises on the first
    call; the sums are the same (0 + x is exact).
    """
    traced = step_fn.get_concrete_function(iterator.element_spec).structured_outputs
    totals = {k: tf.zeros(v.shape, v.dtype) for k, v in traced.items()}
    for _ in tf.range(num_steps):
      outputs = step_fn(next(iterator))
      totals = {k: totals[k] + outputs[k] for k in totals}
    return totals

  return run_steps


def replicas_per_pipeline(input_context):
  """How many per-replica batches one input pipeline yields for each global step.

  `distribute_datasets_from_function` runs one pipeline per worker and deals its consecutive
  batches to the worker's replicas, so with N local replicas a global step reads N batches.
  """
  return max(1, input_context.num_replicas_in_sync // input_context.num_input_pipelines)


def epoch_iterator(stage, strategy, epoch, offset=0, num_epochs=1):
  """The distributed iterator over `num_epochs` epochs' batches from `epoch`, starting at that
  epoch's `offset`-th step (for resuming).

  Each epoch keeps its own dataset (its own shuffle seed). Every epoch followed by another is cut
  to `stage.steps_per_epoch` batches, so the next one starts on time and the batches are the same
  however the epochs are grouped into iterators. The last is left as `dataset_fn` made it:
  `train.bench` reads its endless synthetic epoch past `steps_per_epoch`.
  """

  def epochs_dataset_fn(input_context):
    # A global step takes one per-replica batch for each replica this pipeline feeds, so epochs
    # are cut and skipped in per-replica batches: `steps_per_epoch` global steps read
    # `steps_per_epoch * replicas_per_pipeline` of them.
    per_step = replicas_per_pipeline(input_context)
    epochs = [stage.dataset_fn(input_context, e) for e in range(epoch, epoch + num_epochs)]
    epochs = [d.take(stage.steps_per_epoch * per_step) for d in epochs[:-1]] + epochs[-1:]
    dataset = epochs[0].skip(offset * per_step)
    for later in epochs[1:]:
      dataset = dataset.concatenate(later)
    return dataset

  return iter(strategy.distribute_datasets_from_function(epochs_dataset_fn))


def steps_in_next_call(step, total_steps, iterator_end, stage, train_config):
  """How many steps the next compiled call runs, from `step`.

  A call stops where Python has work to do: a log or checkpoint step, the end of training or of
  the iterator's last epoch and, only for stages with per-epoch bookkeeping, the epoch's end.
  Elsewhere calls span epochs: each call has a fixed cost, and a second call per short epoch
  (a UCI epoch is 11 steps) slowed such stages markedly (timed with `train.main` against
  `train.bench`; see docs/performance.md).
  """
  stops = [step + train_config.steps_per_call, total_steps,
           iterator_end * stage.steps_per_epoch,
           (step // train_config.log_every_steps + 1) * train_config.log_every_steps,
           (step // train_config.checkpoint_every_steps + 1) *
           train_config.checkpoint_every_steps]
  if stage.on_epoch_end is not None:
    stops.append((step // stage.epoch_end_steps + 1) * stage.epoch_end_steps)
  return min(stops) - step


def fit(stage, stage_dir, strategy, train_config):
  """Trains `stage` to its end (or early stop), resuming from `stage_dir` if a run was killed.

  Returns a `FitResult`. Raises `NonFiniteLossError` (keeping the last good checkpoint) if any
  step metric becomes NaN or Inf.
  """
  chief = distribute.is_chief(strategy)
  with strategy.scope():
    step_var = tf.Variable(0, dtype=tf.int64, trainable=False, name='global_step')
  # An early stop is recorded in the checkpoint, so a run killed after its stop decision (but
  # before its stage wrote metrics.json) does not train on when it is started again.
  stopped_var = tf.Variable('', dtype=tf.string, trainable=False, name='stop_reason')
  # The current epoch's metric sums, saved with every checkpoint: a run resumed mid-epoch hands
  # `on_epoch_end` the whole epoch's means, not only the part after the resume.
  epoch_sums_var = tf.Variable('', dtype=tf.string, trainable=False, name='epoch_sums')
  # Likewise the log window in progress and the last logged means, so that the next log line
  # and `FitResult.final_metrics` (metrics.json's final_train_metrics) are the uninterrupted
  # run's, even after a resume at the very last step.
  log_window_var = tf.Variable('', dtype=tf.string, trainable=False, name='log_window')
  checkpoint = checkpoint_for(stage.models, stage.optimizers,
                              dict(stage.extra_state, trainer_stop_reason=stopped_var,
                                   trainer_epoch_sums=epoch_sums_var,
                                   trainer_log_window=log_window_var), step_var,
                              with_random_state=True)
  # Every worker saves (saving is collective), each into its own directory, but every worker
  # restores from the chief's: a worker restarted on a fresh machine (empty temp dir) must
  # resume at the same step as the others, or their collective ops would never match up.
  own_dir = distribute.worker_dir(checkpoint_dir(stage_dir), strategy)
  for name in remove_unfinished_saves(own_dir):
    print(f'[{stage.name}] removed {os.path.join(own_dir, name)}, an interrupted save',
          flush=True)
  manager = tf.train.CheckpointManager(checkpoint, own_dir,
                                       max_to_keep=train_config.max_checkpoints_to_keep)
  latest = tf.train.latest_checkpoint(checkpoint_dir(stage_dir))
  if latest:
    checkpoint.restore(latest).assert_existing_objects_matched()
    print(f'[{stage.name}] resumed from {latest} at step {int(step_var.numpy())}', flush=True)
  # The last step saved, tracked here rather than read from each worker's own directory, so
  # every worker makes the same save decisions (a mismatched collective save would hang).
  last_saved = int(step_var.numpy()) if latest else -1
  saved_path = latest  # what a rerun would resume from, for the Ctrl-C and NaN messages

  total_steps = stage.steps_per_epoch * stage.epochs
  if stage.max_steps:
    total_steps = min(total_steps, stage.max_steps)
  writer = (tf.summary.create_file_writer(os.path.join(stage_dir, 'train')) if chief
            else tf.summary.create_noop_writer())

  run_steps = make_run_steps(stage, strategy, train_config)

  step = int(step_var.numpy())
  progress = _Progress(stage.name, total_steps, stage.global_batch_size, step)
  stop_reason = stopped_var.numpy().decode() or 'completed all steps'
  if stopped_var.numpy():
    print(f'[{stage.name}] already stopped early at step {step}: {stop_reason}', flush=True)
    total_steps = step
  final_means, window_sums, window_steps = _decode_log_window(log_window_var.numpy())
  start_time = time.perf_counter()
  first_call = None  # (time it returned, step after it)
  epochs_completed = step // stage.steps_per_epoch
  # Since the epoch began (only stages with on_epoch_end); restored from the checkpoint.
  epoch_sums, epoch_steps = _decode_epoch_sums(epoch_sums_var.numpy(), step,
                                               stage.epoch_end_steps)
  iterator, iterator_end = None, -1  # the iterator serves epochs up to iterator_end - 1

  try:
    while step < total_steps:
      epoch, offset = divmod(step, stage.steps_per_epoch)
      if epoch >= iterator_end:  # also true for the first (possibly resumed) epoch
        iterator_end = min(epoch + max(1, train_config.epochs_per_iterator), stage.epochs)
        iterator = epoch_iterator(stage, strategy, epoch, offset, iterator_end - epoch)
      chunk = steps_in_next_call(step, total_steps, iterator_end, stage, train_config)
      if first_call is None and chief:
        print(f'[{stage.name}] tracing and compiling the training step (the first call), then '
              f'{total_steps - step} steps', flush=True)
      sums = run_steps(iterator, tf.constant(chunk, dtype=tf.int64))
      sums = {k: float(v) for k, v in sums.items()}
      bad = sorted(k for k, v in sums.items() if not math.isfinite(v))
      if bad:
        raise NonFiniteLossError(
            f'stage {stage.name!r}: {", ".join(bad)} became NaN/Inf between steps {step} and '
            f'{step + chunk}; stopped without saving. '
            f'{_resume_point(saved_path, stage.name)}; lower '
            f'--config.{stage.name}.learning_rate or check the input data.')
      step += chunk
      if first_call is None:
        first_call = (time.perf_counter(), step)
        progress.restart(step)
      step_var.assign(step)
      epochs_completed = step // stage.steps_per_epoch
      for k, v in sums.items():
        window_sums[k] = window_sums.get(k, 0.0) + v
        epoch_sums[k] = epoch_sums.get(k, 0.0) + v
      window_steps += chunk
      epoch_steps += chunk

      if step % train_config.log_every_steps == 0 or step == total_steps:
        final_means = {k: v / window_steps for k, v in window_sums.items()}
        line, rate = progress.line(step, final_means)
        if chief:
          print(line, flush=True)
          with writer.as_default(step=step):
            for k, v in final_means.items():
              tf.summary.scalar(k, v)
            if rate is not None:
              tf.summary.scalar('examples_per_second', rate)
            if stage.on_log is not None:
              stage.on_log(step)
        window_sums, window_steps = {}, 0
      # The epoch's decision comes before the checkpoint, so a saved epoch boundary always has its
      # `on_epoch_end` (stop rule) applied: a resume never skips or repeats one.
      stopping = False
      if stage.on_epoch_end is not None and (step % stage.epoch_end_steps == 0
                                             or step == total_steps):
        epoch_means = {k: v / epoch_steps for k, v in epoch_sums.items()}
        if step % stage.epoch_end_steps == 0:  # a run cut short mid-epoch keeps its sums
          epoch_sums, epoch_steps = {}, 0
        with writer.as_default(step=step):
          # The epoch that just ended (a call may span several with `epoch_end_every` > 1).
          reason = stage.on_epoch_end((step - 1) // stage.steps_per_epoch, epoch_means)
        if reason:
          stopped_var.assign(reason)
          stop_reason = reason
          stopping = True
          print(f'[{stage.name}] stopping early: {reason}', flush=True)
      if stopping or step % train_config.checkpoint_every_steps == 0:
        epoch_sums_var.assign(_encode_epoch_sums(epoch_sums, epoch_steps))
        log_window_var.assign(_encode_log_window(final_means, window_sums, window_steps))
        saved_path = manager.save(checkpoint_number=step)
        last_saved = step
      if stopping:
        break
  except KeyboardInterrupt:
    raise Interrupted(f'stage {stage.name!r} interrupted at step {step} of {total_steps}. '
                      f'{_resume_point(saved_path, stage.name)}') from None

  if last_saved != step:
    epoch_sums_var.assign(_encode_epoch_sums(epoch_sums, epoch_steps))
    log_window_var.assign(_encode_log_window(final_means, window_sums, window_steps))
    saved_path = manager.save(checkpoint_number=step)
  if window_steps:
    final_means = {k: v / window_steps for k, v in window_sums.items()}
  writer.flush()
  end_time = time.perf_counter()
  steady_rate = None
  if first_call is not None and step > first_call[1]:
    steady_rate = (step - first_call[1]) * stage.global_batch_size / (end_time - first_call[0])
  return FitResult(steps=step, epochs_completed=epochs_completed, stop_reason=stop_reason,
                   final_metrics=final_means, seconds=end_time - start_time,
                   examples_per_second=steady_rate,
                   first_call_seconds=first_call[0] - start_time if first_call else None)


def _resume_point(saved_path, stage_name):
  """What a rerun of the same command resumes from, said truthfully."""
  if saved_path:
    return f'The last checkpoint is {saved_path}; rerunning the same command resumes from it'
  return (f'No checkpoint of {stage_name!r} was saved yet; rerunning the same command starts '
          f'the stage from step 0')


def _encode_log_window(final_means, sums, steps):
  return json.dumps({'final_means': final_means, 'sums': sums, 'steps': steps}, sort_keys=True)


def _decode_log_window(encoded):
  """(last logged means, window sums, window steps) as saved, or empty for a fresh run."""
  if not encoded:
    return {}, {}, 0
  saved = json.loads(encoded.decode() if isinstance(encoded, bytes) else encoded)
  return (saved['final_means'], {k: float(v) for k, v in saved['sums'].items()},
          int(saved['steps']))


def _encode_epoch_sums(sums, steps):
  return json.dumps({'steps': steps, 'sums': sums}, sort_keys=True)


def _decode_epoch_sums(encoded, step, steps_per_epoch):
  """The (sums, steps) a checkpoint saved for the epoch(s) in progress at `step`.

  Saved only with the checkpoint of that same step, so its steps must be `step`'s offset since
  the last `on_epoch_end` (`steps_per_epoch` is `Stage.epoch_end_steps`); anything else (no
  checkpoint, a boundary) starts empty.
  """
  if not encoded:
    return {}, 0
  saved = json.loads(encoded.decode() if isinstance(encoded, bytes) else encoded)
  if saved['steps'] != step % steps_per_epoch or saved['steps'] == 0:
    return {}, 0
  return {k: float(v) for k, v in saved['sums'].items()}, int(saved['steps'])


def checkpoint_fingerprint(prefix):
  """SHA-256 of a checkpoint's saved values (every tensor, by key), not of its files.

  A checkpoint's index file also holds the object graph, whose variable names carry Keras'
  per-process counters (`adam_8/iteration` in one process, `adam_2/iteration` in a resumed
  one), so equal weights can give different files. The values alone say whether two
  checkpoints hold the same model; `task` and `export` use this to know what they derive from.
  """
  reader = tf.train.load_checkpoint(prefix)
  digest = hashlib.sha256()
  for key in sorted(reader.get_variable_to_shape_map()):
    if key == '_CHECKPOINTABLE_OBJECT_GRAPH':
      continue
    value = reader.get_tensor(key)
    digest.update(key.encode())
    digest.update(value if isinstance(value, bytes) else np.ascontiguousarray(value).tobytes())
  return digest.hexdigest()


def restore_models(stage_dir, models, what):
  """Restores `models` (name → model with variables) from a finished stage's last checkpoint."""
  latest = tf.train.latest_checkpoint(checkpoint_dir(stage_dir))
  if latest is None:
    raise UserError(f'{what}: no checkpoint in {checkpoint_dir(stage_dir)}.')
  status = checkpoint_for(models).restore(latest)
  status.expect_partial()
  status.assert_existing_objects_matched()
  return latest

