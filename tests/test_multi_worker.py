"""Two workers on 127.0.0.1 (MultiWorkerMirroredStrategy via TF_CONFIG), as separate processes.

1. `--stage=source`, preempted and restarted: once the chief has a checkpoint, one worker is
   killed. With MultiWorkerMirroredStrategy the survivor cannot go on alone (its next collective
   op waits for the dead peer until TF's health check aborts it with UnavailableError, typically
   30-60 s later), and TF's documented recovery is to restart every worker with the same command;
   the test kills the survivor as well instead of waiting, then restarts both. Training must
   resume from the chief's last checkpoint on *both* workers, finish, and leave identical weights
   on both.
2. `--stage=all` on a tiny config: both workers run source → target_only → pixel → task →
   feature → export; the non-chief waits for and reads the chief's translated source set, which
   holds every source example exactly once; every trained stage ends with the same weights on
   both workers; each worker's input shard is its own half of the data.

In both, summaries, metrics.json, checkpoints and everything else in model_dir are written by the
chief only, the other worker's checkpoints going to its private temp directory. The workers run
with different umasks (chief 022, other 027), so a file or directory the non-chief created in
model_dir would show up without the world-read bit whatever code path wrote it.
"""

import pytest
import collections
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np
import tensorflow as tf

from configs import uci_mnist
from cycada_tf import distribute
from cycada_tf.data import domains
from cycada_tf.data import pairs
from cycada_tf.data import pipeline
from cycada_tf.data import translated
from cycada_tf.stages import common
from train import main as train_main

from tests.conftest import REPO

# End-to-end, multi-process or benchmark: excluded from the fast tier (-m "not slow").
pytestmark = pytest.mark.slow
STEPS = 3 * 44  # 3 epochs of 1,437 UCI digits in global batches of 32
SOURCE_FLAGS = ['--stage=source', '--config.source.epochs=3', '--config.source.batch_size=32',
                '--config.train.checkpoint_every_steps=10', '--config.train.log_every_steps=10',
                '--config.train.steps_per_call=5']
# `--stage=all`, tiny: narrow GANs, global batch 32 (16 per worker), 12 steps per stage.
ALL_STEPS = 12
TRAINED_STAGES = ('source', 'target_only', 'pixel', 'task', 'feature')
TINY = {'model.generator_filters': 8, 'model.discriminator_filters': 8,
        'source.batch_size': 32, 'target_only.batch_size': 32, 'pixel.batch_size': 32,
        'pixel.decay_epochs': 0, 'task.batch_size': 32, 'feature.batch_size': 32,
        'feature.learning_rate': 1e-3, 'feature.discriminator_learning_rate': 1e-3,
        # Open on every step: in 12 steps a fair D_feat (both sides in one mode) rarely passes
        # 60 %, and the workers' f_T must have been updated for comparing it to mean something.
        'feature.gate_threshold': 0.0,
        'max_steps': ALL_STEPS, 'train.checkpoint_every_steps': 10,
        'train.log_every_steps': 10}
ALL_FLAGS = ['--stage=all'] + [f'--config.{key}={value}' for key, value in TINY.items()]
UMASKS = (0o022, 0o027)  # chief, other worker


def _free_ports(count):
  sockets = [socket.socket() for _ in range(count)]
  for s in sockets:
    s.bind(('127.0.0.1', 0))
  ports = [s.getsockname()[1] for s in sockets]
  for s in sockets:
    s.close()
  return ports


def _start_workers(model_dir, data_dir, ports, tmp_dirs, flags):
  command = [sys.executable, '-m', 'train.main', '--dataset=uci_mnist',
             '--strategy=multi_worker', f'--model_dir={model_dir}', f'--data_dir={data_dir}',
             *flags]
  cluster = {'worker': [f'127.0.0.1:{port}' for port in ports]}
  processes = []
  for index, tmp_dir in enumerate(tmp_dirs):
    env = dict(os.environ, TMPDIR=str(tmp_dir), TF_CPP_MIN_LOG_LEVEL='2', TF_CONFIG=json.dumps(
        {'cluster': cluster, 'task': {'type': 'worker', 'index': index}}))
    processes.append(subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True,
                                      umask=UMASKS[index]))
  return processes


def _tmp_dirs(tmp_path):
  tmp_dirs = [tmp_path / 'tmp0', tmp_path / 'tmp1']
  for d in tmp_dirs:
    d.mkdir()
  return tmp_dirs


def _created_by_non_chief(model_dir):
  """Paths under model_dir (itself included) created with the non-chief's umask (027)."""
  paths = [str(model_dir)]
  for root, dirs, files in os.walk(model_dir):
    paths += [os.path.join(root, name) for name in dirs + files]
  return [path for path in paths if not os.stat(path).st_mode & 0o004]


def _event_pids(event_dir):
  """The writers' pids of the event files in `event_dir` (names end in `.<pid>.<n>.v2`)."""
  names = [name for name in os.listdir(event_dir) if name.startswith('events.out.tfevents')]
  assert names, f'no event file in {event_dir}'
  return {int(re.search(r'\.(\d+)\.\d+\.v2$', name).group(1)) for name in names}


def _worker_checkpoint_dir(chief_checkpoints, worker_tmp_dir):
  """Where worker 1 (TMPDIR=`worker_tmp_dir`) saved in place of `chief_checkpoints`."""
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(tempfile, 'tempdir', str(worker_tmp_dir))  # that worker's TMPDIR
    path = distribute.non_chief_dir(str(chief_checkpoints), 'worker', 1)
  assert path.startswith(str(worker_tmp_dir))
  return path


def _variables(checkpoint_prefix, prefix='model_classifier/'):
  reader = tf.train.load_checkpoint(checkpoint_prefix)
  return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
          if name.startswith(prefix)}


def _assert_same_checkpoint(chief_final, worker_final, prefix='model_classifier/'):
  chief_vars, worker_vars = _variables(chief_final, prefix), _variables(worker_final, prefix)
  chief_vars.pop('_CHECKPOINTABLE_OBJECT_GRAPH', None)
  worker_vars.pop('_CHECKPOINTABLE_OBJECT_GRAPH', None)
  assert len(chief_vars) >= 8 and chief_vars.keys() == worker_vars.keys()
  for name, value in chief_vars.items():
    np.testing.assert_array_equal(worker_vars[name], value, err_msg=f'{chief_final}: {name}')


def test_two_workers_resume_after_preemption_and_agree(tmp_path, offline_data_dir):
  model_dir = tmp_path / 'model'
  tmp_dirs = _tmp_dirs(tmp_path)
  ports = _free_ports(2)
  chief_checkpoints = model_dir / 'source' / 'checkpoints'

  # 1. Both workers start; as soon as the chief has saved, worker 1 is "preempted".
  first = _start_workers(model_dir, offline_data_dir, ports, tmp_dirs, SOURCE_FLAGS)
  deadline = time.time() + 240
  while time.time() < deadline and all(p.poll() is None for p in first):
    if tf.train.latest_checkpoint(str(chief_checkpoints)):
      break
    time.sleep(0.2)
  outputs = [p.stdout.read() if p.poll() is not None else '' for p in first]
  assert all(p.poll() is None for p in first), f'a worker ended early: {outputs}'
  first[1].send_signal(signal.SIGKILL)
  first[1].wait()
  first[0].send_signal(signal.SIGKILL)  # restart all workers, as TF documents
  first[0].wait()
  killed_at = int(tf.train.latest_checkpoint(str(chief_checkpoints)).rsplit('-', 1)[1])
  assert 0 < killed_at < STEPS
  assert not (model_dir / 'source' / 'metrics.json').exists()

  # 2. The same command again, on the same ports: both resume from the chief's checkpoint.
  second = _start_workers(model_dir, offline_data_dir, ports, tmp_dirs, SOURCE_FLAGS)
  outputs = []
  for process in second:
    output, _ = process.communicate(timeout=300)
    outputs.append(output)
  for index, (process, output) in enumerate(zip(second, outputs)):
    assert process.returncode == 0, f'worker {index}: {output[-3000:]}'
    resumed = re.findall(r'\[source\] resumed from (\S+) at step (\d+)', output)
    assert resumed, output[-3000:]
    assert resumed[0][0].startswith(str(chief_checkpoints))  # both read the chief's copy
    assert int(resumed[0][1]) >= killed_at
  assert 'this one is the chief' in outputs[0] and 'this one is the worker' in outputs[1]
  assert '[source] done' in outputs[0] and '[source] done' not in outputs[1]

  # 3. Only the chief wrote into model_dir: metrics.json, its event files, its checkpoints.
  metrics = json.loads((model_dir / 'source' / 'metrics.json').read_text())
  assert metrics['steps'] == STEPS
  chief_pids = {first[0].pid, second[0].pid}
  assert _event_pids(model_dir / 'source' / 'train') <= chief_pids
  assert sorted(os.listdir(model_dir)) == ['config.json', 'source']
  assert _created_by_non_chief(model_dir) == []

  # 4. The other worker saved to its private temp dir, and its weights are the chief's.
  worker_checkpoints = _worker_checkpoint_dir(chief_checkpoints, tmp_dirs[1])
  chief_final = tf.train.latest_checkpoint(str(chief_checkpoints))
  worker_final = tf.train.latest_checkpoint(worker_checkpoints)
  assert chief_final.endswith(f'-{STEPS}') and worker_final.endswith(f'-{STEPS}')
  _assert_same_checkpoint(chief_final, worker_final)


def _tiny_config():
  """The config the `--stage=all` workers run with (uci_mnist's, with the TINY overrides)."""
  return train_main.apply_overrides(uci_mnist.get_config(), TINY)


def _examples(batches):
  """Multiset of (image bytes, label) over (images, labels) batches."""
  return collections.Counter((image.tobytes(), int(label)) for images, labels in batches
                             for image, label in zip(images.numpy(), labels.numpy()))


def _worker_inputs(dataset_fn, steps):
  """The first `steps` batches of epoch 0 that each of two workers' input pipelines yields."""
  inputs = []
  for index in (0, 1):
    context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=index,
                                         num_replicas_in_sync=2)
    inputs.append(list(dataset_fn(context, 0).take(steps)))
    assert len(inputs[-1]) == steps  # both workers have a batch for every step of the epoch
  return inputs


# `ctx` is the Context the workers ran with, for the tests that rebuild their pipelines.
AllRun = collections.namedtuple('AllRun', 'model_dir tmp_dirs chief_out worker_out chief_pid ctx')


@pytest.fixture(scope='module')
def all_run(tmp_path_factory, offline_data_dir):
  """Two workers' `--stage=all` to the end; the tests below check what each section promises.

  One fixture and a test per section, each reported on its own (and see tests/conftest.py's
  LONGEST_MODULES on how xdist hands out long modules)."""
  tmp_path = tmp_path_factory.mktemp('all_run')
  model_dir = tmp_path / 'model'
  tmp_dirs = _tmp_dirs(tmp_path)
  processes = _start_workers(model_dir, offline_data_dir, _free_ports(2), tmp_dirs, ALL_FLAGS)
  outputs = [process.communicate(timeout=900)[0] for process in processes]
  for index, (process, output) in enumerate(zip(processes, outputs)):
    assert process.returncode == 0, f'worker {index}: {output[-3000:]}'
  ctx = common.Context(config=_tiny_config(), pair=pairs.PAIRS['uci_mnist'],
                       model_dir=str(model_dir), data_dir=offline_data_dir)
  return AllRun(model_dir, tmp_dirs, outputs[0], outputs[1], processes[0].pid, ctx)


def test_all_every_stage_ran_on_both_and_only_the_chief_reported(all_run):
  chief_out, worker_out = all_run.chief_out, all_run.worker_out
  assert 'this one is the chief' in chief_out and 'this one is the worker' in worker_out
  # No worker left while the other still worked (the chief exports alone at the end).
  for output in (chief_out, worker_out):
    assert 'stopped sending heartbeats' not in output and 'StartAbort' not in output
  # The chief ran every stage and printed the table; the other worker trained alongside it and
  # wrote nothing of its own.
  for stage in TRAINED_STAGES + ('export',):
    assert chief_out.count(f'[{stage}] done:') == 1, chief_out[-3000:]
    assert f'[{stage}] done' not in worker_out
  assert 'already finished' not in chief_out + worker_out
  assert '[all] uci_mnist, seed 0, target test accuracy:' in chief_out
  for row in ('| source only |', '| pixel only |', '| pixel+feat |', '| target only |'):
    assert row in chief_out
  assert '[all]' not in worker_out


def test_all_model_dir_holds_the_chiefs_files_only(all_run):
  model_dir, tmp_dirs = all_run.model_dir, all_run.tmp_dirs
  # Everything in model_dir is the chief's: the expected files only, event files with the
  # chief's pid, nothing created with the other worker's umask, one export version.
  assert sorted(os.listdir(model_dir)) == sorted(
      TRAINED_STAGES + ('config.json', 'export', 'export_translator'))
  extra = {'pixel': ['translations.png'], 'task': [os.path.basename(common.TRANSLATED_DIR)]}
  for stage in TRAINED_STAGES:
    stage_dir = model_dir / stage
    # Beside them, one event file with the stage's HParams, the chief's.
    hparams = [name for name in os.listdir(stage_dir) if name.startswith('events.out.tfevents')]
    assert len(hparams) == 1 and _event_pids(stage_dir) == {all_run.chief_pid}, stage
    assert sorted(set(os.listdir(stage_dir)) - set(hparams)) == sorted(
        ['checkpoints', 'metrics.json', 'train'] + extra.get(stage, [])), stage
    assert sorted(os.listdir(stage_dir / 'checkpoints')) == [
        'checkpoint', 'ckpt-10.data-00000-of-00001', 'ckpt-10.index',
        'ckpt-12.data-00000-of-00001', 'ckpt-12.index'], stage
    assert len(os.listdir(stage_dir / 'train')) == 1
    assert _event_pids(stage_dir / 'train') == {all_run.chief_pid}
    assert json.loads((stage_dir / 'metrics.json').read_text())['steps'] == ALL_STEPS
  feature_metrics = json.loads((model_dir / 'feature' / 'metrics.json').read_text())
  assert feature_metrics['f_t_updates'] > 0  # f_T was updated, so comparing it means something
  assert sorted(os.listdir(model_dir / 'export')) == ['1', 'metrics.json']
  assert sorted(os.listdir(model_dir / 'export_translator')) == ['1']
  exported = json.loads((model_dir / 'export' / 'metrics.json').read_text())
  assert exported['exported_stage'] == 'feature'
  assert exported['path'] == str(model_dir / 'export' / '1')
  for export_dir in ('export', 'export_translator'):
    assert (model_dir / export_dir / '1' / 'saved_model.pb').exists()
  assert _created_by_non_chief(model_dir) == []
  # The other worker's own files: checkpoints in its temp dir, and nothing else. They show the
  # umask check above works: all of them lack the world-read bit.
  assert os.listdir(tmp_dirs[1]) == ['cycada_worker1']
  worker_root = tmp_dirs[1] / 'cycada_worker1'
  assert len(_created_by_non_chief(worker_root)) == 1 + sum(
      len(dirs) + len(files) for _, dirs, files in os.walk(worker_root))
  assert not [name for _, _, names in os.walk(tmp_dirs[1]) for name in names
              if 'tfevents' in name]


def test_all_translated_set_made_once_and_read_by_the_other_worker(all_run, offline_data_dir):
  model_dir, chief_out, worker_out = all_run.model_dir, all_run.chief_out, all_run.worker_out
  # The translated source set: made once by the chief, awaited and read by the other worker,
  # and holding each source example exactly once, in order, as G_ST renders it.
  translated_dir = model_dir / common.TRANSLATED_DIR
  assert chief_out.count('[task] translating') == 1 and '[task] translating' not in worker_out
  assert (f"[task] reading the chief worker's translated source set in {translated_dir}"
          in worker_out)
  assert sorted(os.listdir(translated_dir)) == ['info.json', 'test.tfrecord', 'train.tfrecord']
  ctx = all_run.ctx
  g_st = common.load_translator(ctx, needed_by='the test')
  source_info = domains.domain_info('uci_digits', offline_data_dir)
  for split in ('train', 'test'):
    images, labels = translated.read_all(str(translated_dir), split)
    source = list(pipeline.domain_dataset('uci_digits', split, ctx.image_shape, batch_size=500,
                                          data_dir=offline_data_dir, shuffle=False))
    assert len(labels) == source_info.num_examples[split]
    np.testing.assert_array_equal(labels, np.concatenate([y.numpy() for _, y in source]))
    expected = np.concatenate([translated.to_uint8(g_st(x, training=False)).numpy()
                               for x, _ in source])
    # uint8 rounding of float noise (another batch size) may move a pixel by one level.
    assert np.max(np.abs(images.astype(np.int32) - expected.astype(np.int32))) <= 1


def test_all_each_worker_reads_its_own_shard(all_run, offline_data_dir):
  ctx = all_run.ctx
  # Input sharding, as each worker's pipeline builds it (InputContext as MWMS passes it):
  # per-replica batches of 16, no example twice in an epoch; the feature stage's target side
  # covers the target train split exactly once per epoch across the two workers.
  spec = common.translated_source_spec(ctx)
  task = common.supervised_stage(ctx, 'task', spec, common.new_classifier(ctx))
  full = _examples(pipeline.domain_dataset(spec, 'train', ctx.image_shape, batch_size=500,
                                           data_dir=offline_data_dir, shuffle=False))
  shards = _worker_inputs(task.dataset_fn, task.steps_per_epoch)
  assert {int(labels.shape[0]) for shard in shards for _, labels in shard} == {16}
  seen = _examples(shards[0]) + _examples(shards[1])
  assert sum(seen.values()) == task.steps_per_epoch * 32 and not seen - full
  # An epoch of the larger domain (MNIST), so the target side must cover it exactly.
  steps = pipeline.steps_per_epoch(common.paired_train_size(ctx, spec, 'longer'), 32)
  shards = _worker_inputs(common.paired_dataset_fn(ctx, spec, 32), steps)
  target_full = _examples(pipeline.domain_dataset('mnist_sample', 'train', ctx.image_shape,
                                                  batch_size=500, data_dir=offline_data_dir))
  target_seen = _examples([target for shard in shards for _, target in shard])
  assert sum(target_full.values()) == steps * 32 and target_seen == target_full
  source_sides = [_examples([source for source, _ in shard]) for shard in shards]
  assert set(source_sides[0]) | set(source_sides[1]) == set(full)


def test_all_workers_end_every_stage_with_the_same_state(all_run):
  model_dir, tmp_dirs = all_run.model_dir, all_run.tmp_dirs
  # Every trained stage ends with the same weights (and optimizer and stage state) on both
  # workers; the other worker's copy is in its private temp dir.
  for stage in TRAINED_STAGES:
    chief_checkpoints = model_dir / stage / 'checkpoints'
    worker_checkpoints = _worker_checkpoint_dir(chief_checkpoints, tmp_dirs[1])
    chief_final = tf.train.latest_checkpoint(str(chief_checkpoints))
    worker_final = tf.train.latest_checkpoint(worker_checkpoints)
    assert chief_final.endswith(f'-{ALL_STEPS}') and worker_final.endswith(f'-{ALL_STEPS}')
    _assert_same_checkpoint(chief_final, worker_final, prefix='')
