"""Two workers on 127.0.0.1 (MultiWorkerMirroredStrategy via TF_CONFIG): preempted, restarted, done.

Both workers run `python -m train.main --stage=source --strategy=multi_worker`. Once the chief
has a checkpoint, one worker is killed. With MultiWorkerMirroredStrategy the survivor cannot go
on alone (its next collective op waits for the dead peer until TF's health check aborts it with
UnavailableError, typically 30-60 s later), and TF's documented recovery is to restart every
worker with the same command; the test kills the survivor as well instead of waiting, then
restarts both. Training must resume from the chief's last checkpoint on *both* workers, finish,
leave identical weights on both, and leave summaries, metrics.json and checkpoints in model_dir
written by the chief only, the other worker's checkpoints going to its private temp directory.
"""

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

from cycada_tf import distribute

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 3 * 44  # 3 epochs of 1,437 UCI digits in global batches of 32


def _free_ports(count):
  sockets = [socket.socket() for _ in range(count)]
  for s in sockets:
    s.bind(('127.0.0.1', 0))
  ports = [s.getsockname()[1] for s in sockets]
  for s in sockets:
    s.close()
  return ports


def _start_workers(model_dir, data_dir, ports, tmp_dirs):
  command = [sys.executable, '-m', 'train.main', '--stage=source', '--dataset=uci_mnist',
             '--strategy=multi_worker', f'--model_dir={model_dir}', f'--data_dir={data_dir}',
             '--config.source.epochs=3', '--config.source.batch_size=32',
             '--config.train.checkpoint_every_steps=10', '--config.train.log_every_steps=10',
             '--config.train.steps_per_call=5']
  cluster = {'worker': [f'127.0.0.1:{port}' for port in ports]}
  processes = []
  for index, tmp_dir in enumerate(tmp_dirs):
    env = dict(os.environ, TMPDIR=str(tmp_dir), TF_CPP_MIN_LOG_LEVEL='2', TF_CONFIG=json.dumps(
        {'cluster': cluster, 'task': {'type': 'worker', 'index': index}}))
    processes.append(subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
  return processes


def _variables(checkpoint_prefix):
  reader = tf.train.load_checkpoint(checkpoint_prefix)
  return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
          if name.startswith('model_classifier/')}


def test_two_workers_resume_after_preemption_and_agree(tmp_path, offline_data_dir, monkeypatch):
  model_dir = tmp_path / 'model'
  tmp_dirs = [tmp_path / 'tmp0', tmp_path / 'tmp1']
  for d in tmp_dirs:
    d.mkdir()
  ports = _free_ports(2)
  chief_checkpoints = model_dir / 'source' / 'checkpoints'

  # 1. Both workers start; as soon as the chief has saved, worker 1 is "preempted".
  first = _start_workers(model_dir, offline_data_dir, ports, tmp_dirs)
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
  second = _start_workers(model_dir, offline_data_dir, ports, tmp_dirs)
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
  events = os.listdir(model_dir / 'source' / 'train')
  # Event file names end in `.<pid>.<n>.v2`.
  assert events and {int(re.search(r'\.(\d+)\.\d+\.v2$', name).group(1))
                     for name in events} <= chief_pids
  assert sorted(os.listdir(model_dir)) == ['source']

  # 4. The other worker saved to its private temp dir, and its weights are the chief's.
  monkeypatch.setattr(tempfile, 'tempdir', str(tmp_dirs[1]))  # that worker's TMPDIR
  worker_checkpoints = distribute.non_chief_dir(str(chief_checkpoints), 'worker', 1)
  assert worker_checkpoints.startswith(str(tmp_dirs[1]))
  chief_final = tf.train.latest_checkpoint(str(chief_checkpoints))
  worker_final = tf.train.latest_checkpoint(worker_checkpoints)
  assert chief_final.endswith(f'-{STEPS}') and worker_final.endswith(f'-{STEPS}')
  chief_vars, worker_vars = _variables(chief_final), _variables(worker_final)
  assert len(chief_vars) >= 8 and chief_vars.keys() == worker_vars.keys()
  for name, value in chief_vars.items():
    np.testing.assert_array_equal(worker_vars[name], value, err_msg=name)
