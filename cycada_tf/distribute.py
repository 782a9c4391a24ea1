"""Which `tf.distribute` strategy runs training, and where each worker may write.

One place decides the strategy so that every stage, the benchmark and the tests agree:
`auto` mirrors over all local GPUs when there are any and otherwise uses the default strategy;
`--cpu_replicas=N` splits the CPU into N logical devices so MirroredStrategy with N replicas runs
on any machine (tests, and users checking a multi-replica setup before renting GPUs).

Multi-worker rules (MultiWorkerMirroredStrategy), which the trainer and stages follow:
- `model_dir` is shared by all workers (a network file system or a bucket): every worker
  *restores* from the chief's checkpoints there, so a worker restarted on a fresh machine resumes
  at the same step as the others.
- Saving is collective, so every worker saves, but only the chief's copy is kept in `model_dir`;
  the others write to a private temporary directory (`worker_dir`).
- Only the chief writes summaries, metrics.json, PNGs and exports; other workers wait for files
  the chief produces (`wait_for`) instead of producing their own.
- No worker leaves before the others are done (`barrier` at the end of every command).
"""

import hashlib
import json
import os
import tempfile
import time

import tensorflow as tf

from cycada_tf.errors import UserError
from cycada_tf.errors import check_choice

STRATEGIES = ('auto', 'one_device', 'mirrored', 'multi_worker')


def configure_cpu_replicas(num_replicas):
  """Splits the first CPU into `num_replicas` logical devices; must run before TF initialises."""
  if num_replicas <= 1:
    return
  cpus = tf.config.list_physical_devices('CPU')
  try:
    tf.config.set_logical_device_configuration(
        cpus[0], [tf.config.LogicalDeviceConfiguration()] * num_replicas)
  except RuntimeError as e:
    raise UserError(f'--cpu_replicas={num_replicas} must be set before TensorFlow starts '
                    f'running ops ({e}).') from None


def create_strategy(name='auto', cpu_replicas=0):
  """Returns the strategy called `name`, after splitting the CPU if `cpu_replicas` > 1."""
  check_choice('--strategy', name, STRATEGIES, problem=' is unknown')
  if name == 'multi_worker':
    if 'TF_CONFIG' not in os.environ:
      raise UserError('--strategy=multi_worker needs the TF_CONFIG environment variable '
                      '(cluster and task); see the README section "Distributed training".')
    configure_cpu_replicas(cpu_replicas)
    return tf.distribute.MultiWorkerMirroredStrategy()
  configure_cpu_replicas(cpu_replicas)
  gpus = tf.config.list_logical_devices('GPU')
  if cpu_replicas > 1:
    devices = [d.name for d in tf.config.list_logical_devices('CPU')]
    return tf.distribute.MirroredStrategy(devices)
  if name == 'mirrored':
    return tf.distribute.MirroredStrategy()
  if name == 'one_device':
    return tf.distribute.OneDeviceStrategy('/gpu:0' if gpus else '/cpu:0')
  # auto
  if gpus:
    return tf.distribute.MirroredStrategy()
  return tf.distribute.get_strategy()


def is_chief(strategy):
  """True on the one worker that writes summaries, metrics.json and exports."""
  resolver = getattr(strategy, 'cluster_resolver', None)
  if resolver is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
    return True
  task_type, task_id = resolver.task_type, resolver.task_id
  if task_type in (None, 'chief'):
    return True
  cluster = resolver.cluster_spec().as_dict()
  return task_type == 'worker' and task_id == 0 and 'chief' not in cluster


def worker_dir(path, strategy):
  """Where this worker writes checkpoints: `path` on the chief, a temporary directory elsewhere.

  MultiWorkerMirroredStrategy needs every worker to save (saving is collective), but only the
  chief's copy is kept; the others write to throwaway directories, as TF documents.
  """
  if is_chief(strategy):
    return path
  resolver = strategy.cluster_resolver
  return non_chief_dir(path, resolver.task_type, resolver.task_id)


def non_chief_dir(path, task_type, task_id):
  """The private directory a non-chief worker writes in place of `path`.

  It is keyed by a hash of the absolute `path`, so two stages (both writing `.../checkpoints`) or
  two runs on one machine never share it: a stale copy from another stage must never be mistaken
  for this one's. `tempfile.gettempdir()` honours `TMPDIR`.
  """
  key = hashlib.sha1(os.path.abspath(path).encode()).hexdigest()[:12]
  return os.path.join(tempfile.gettempdir(), f'cycada_{task_type}{task_id}', key,
                      os.path.basename(os.path.normpath(path)))


def wait_for(predicate, what, timeout_seconds=3600, poll_seconds=0.5):
  """Blocks until `predicate()` is true; used by non-chief workers waiting for the chief's files.

  A non-chief that needs something only the chief writes (translated TFRecords, a finished
  stage's metrics.json) polls for it outside any collective op, so the chief is never blocked.
  Raises UserError after `timeout_seconds`, naming `what`, rather than hanging forever when the
  chief has died.
  """
  deadline = time.monotonic() + timeout_seconds
  while not predicate():
    if time.monotonic() > deadline:
      raise UserError(f'gave up after {timeout_seconds:.0f}s waiting for {what}; is the chief '
                      'worker running, and is model_dir on storage every worker can read?')
    time.sleep(poll_seconds)


def barrier(strategy):
  """Returns once every worker has called it; a no-op unless the strategy is multi-worker.

  A worker that exits while another is still working stops sending heartbeats, and TF's
  coordination service then reports it as crashed to the others and aborts their collective
  executor. `workflow.run` therefore ends every command here, so a worker that finishes early
  (a non-chief skips the chief-only export, or its share of a stage's evaluation) waits for the
  rest. It is one all-reduce of a scalar: every worker must reach it the same number of times.
  """
  if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
    return

  @tf.function  # eagerly, MultiWorkerMirroredStrategy warns that it is slow
  def all_reduce_one():
    ones = strategy.run(lambda: tf.constant(1.0))
    return strategy.reduce(tf.distribute.ReduceOp.SUM, ones, axis=None)

  all_reduce_one()


def describe(strategy):
  """One line for logs: strategy class, replicas, and the worker's role."""
  role = 'chief' if is_chief(strategy) else 'worker'
  cluster = json.loads(os.environ.get('TF_CONFIG', '{}')).get('cluster', {})
  workers = sum(len(v) for v in cluster.values()) or 1
  return (f'{type(strategy).__name__}: {strategy.num_replicas_in_sync} replica(s), '
          f'{workers} worker(s), this one is the {role}')
