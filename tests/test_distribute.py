"""Training does not depend on the replica count: 1 vs 2 CPU replicas on the same global batches.

Each real stage (source, which is also task's step; DTN with batch norm; pixel with its image
pool; feature with its gate) runs a few steps in `tests/replica_check.py`, once with 1 replica
and once with 2, each in a fresh process (logical CPUs must be configured before TensorFlow
starts). Per-step losses must agree to rtol 1e-4 / atol 1e-5, weights likewise (see
`_assert_weights_match` for the one family of weights that cannot), replica-local state must be
identical on every replica, and a control run with per-replica batch norm must *not* agree, so
the comparison demonstrably notices replica-count-dependent statistics.
"""

import collections
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from cycada_tf import distribute
from cycada_tf.data import pipeline
from cycada_tf.errors import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STAGES = 'source,dtn,pixel,feature'
# Biases of convolutions and dense layers that feed a normalization layer (DTN's batch norm, the
# generators' and discriminators' group norm). Their true gradient is exactly 0 — normalization
# removes any per-channel constant — so what they receive is rounding noise, which Adam scales
# up to steps of ±learning_rate; two runs agree on them only to that noise.
_NORMALISED_BIAS = re.compile(r'(dtn|pixel)/var/.*/(conv\d+|conv2d(_\d+)?|conv2d_transpose(_\d+)?|'
                              r'fc)/bias$')


@pytest.fixture(scope='module')
def runs(tmp_path_factory, offline_data_dir):
  """Result arrays of the 1-replica and the 2-replica runs (both processes run concurrently)."""
  out = tmp_path_factory.mktemp('replicas')
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  processes = {}
  for replicas, stages in ((1, STAGES), (2, STAGES + ',dtn_local_bn')):
    directory = out / f'r{replicas}'
    directory.mkdir()
    processes[replicas] = (directory, subprocess.Popen(
        [sys.executable, os.path.join(REPO, 'tests', 'replica_check.py'), f'--stages={stages}',
         f'--replicas={replicas}', f'--data_dir={offline_data_dir}', f'--out={directory}'],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
  results = {}
  for replicas, (directory, process) in processes.items():
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output[-4000:]
    results[replicas] = dict(np.load(directory / 'result.npz'))
  return results


def _assert_metrics_match(runs, stage):
  one, two = runs[1], runs[2]
  keys = sorted(k for k in one if k.startswith(f'{stage}/metric/'))
  assert keys and keys == sorted(k for k in two if k.startswith(f'{stage}/metric/'))
  for key in keys:
    assert one[key].size >= 1
    np.testing.assert_allclose(two[key], one[key], rtol=1e-4, atol=1e-5, err_msg=key)


def _assert_weights_match(runs, stage, rtol=1e-4, atol=1e-5):
  one, two = runs[1], runs[2]
  keys = sorted(k for k in one if k.startswith(f'{stage}/var/'))
  assert keys and keys == sorted(k for k in two if k.startswith(f'{stage}/var/'))
  compared = 0
  for key in keys:
    if _NORMALISED_BIAS.search(key) or '/pool_' in key:
      continue
    np.testing.assert_allclose(two[key], one[key], rtol=rtol, atol=atol, err_msg=key)
    compared += 1
  assert compared >= 8


def test_source_step_is_independent_of_replica_count(runs):
  """The supervised step of `source`, `target_only` and `task` (LeNet; dropout off)."""
  _assert_metrics_match(runs, 'source')
  _assert_weights_match(runs, 'source')


def test_synchronized_batch_norm_makes_dtn_independent_of_replica_count(runs):
  _assert_metrics_match(runs, 'dtn')
  # The excluded conv biases shift the batch means by their noise, which the moving means
  # record; so DTN's weights, like pixel's, agree to the looser tolerance.
  _assert_weights_match(runs, 'dtn', rtol=1e-3, atol=2e-4)
  # The control: per-replica statistics over 4 images instead of global ones over 8 change the
  # very first loss far beyond the tolerance above.
  first = runs[1]['dtn/metric/loss'][0]
  local = runs[2]['dtn_local_bn/metric/loss'][0]
  assert abs(local - first) > 1e-3 * abs(first)


def test_pixel_stage_with_global_image_pool_is_independent_of_replica_count(runs):
  _assert_metrics_match(runs, 'pixel')
  # Group norm everywhere: rounding noise in near-zero gradients is scaled up by Adam, so the
  # generators' weights agree to a looser tolerance than their losses (which are tight above).
  _assert_weights_match(runs, 'pixel', rtol=1e-3, atol=2e-4)
  one, two = runs[1], runs[2]
  for name in ('pool_d_t', 'pool_d_s'):
    # Every replica holds the same, full pool ...
    for key in (k for k in two if k.startswith(f'pixel/replica_spread/{name}/')):
      assert two[key] == 0.0, key
    # ... and it is the 1-replica pool: same count, same fakes in the same slots.
    assert two[f'pixel/var/{name}/num_stored:0'] == one[f'pixel/var/{name}/num_stored:0'] == 4
    np.testing.assert_allclose(two[f'pixel/var/{name}/images:0'],
                               one[f'pixel/var/{name}/images:0'], atol=1e-2)


def test_feature_gate_decisions_are_independent_of_replica_count(runs):
  _assert_metrics_match(runs, 'feature')
  _assert_weights_match(runs, 'feature')
  updated = runs[1]['feature/metric/updated']
  # Both branches of the gate were taken, so both were compared.
  assert 0 < updated.sum() < len(updated), updated


def test_input_shards_cover_each_example_exactly_once(offline_data_dir):
  """Two workers' input pipelines together see the train split once per epoch, no overlap."""

  def examples(input_context):
    dataset = pipeline.domain_dataset(
        'uci_digits', 'train', (28, 28, 1), batch_size=32, data_dir=offline_data_dir,
        shuffle=True, seed=5, drop_remainder=False, input_context=input_context)
    return collections.Counter((image.tobytes(), int(label)) for images, labels in dataset
                               for image, label in zip(images.numpy(), labels.numpy()))

  full = examples(None)
  shards = [examples(tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=i,
                                                num_replicas_in_sync=2)) for i in (0, 1)]
  assert sum(full.values()) == 1437
  # As multisets (the split holds a few identical images): every example is on exactly one
  # worker; one seen twice, on one worker or on both, would make the sum exceed the split.
  assert shards[0] + shards[1] == full
  assert abs(sum(shards[0].values()) - sum(shards[1].values())) <= 1


def test_non_chief_directories_are_private_to_one_path(tmp_path, monkeypatch):
  monkeypatch.setenv('TMPDIR', str(tmp_path))
  monkeypatch.setattr('tempfile.tempdir', None)
  source = distribute.non_chief_dir('/runs/a/source/checkpoints', 'worker', 1)
  task = distribute.non_chief_dir('/runs/a/task/checkpoints', 'worker', 1)
  other = distribute.non_chief_dir('/runs/a/source/checkpoints', 'worker', 2)
  assert len({source, task, other}) == 3
  assert source.startswith(str(tmp_path)) and source.endswith('checkpoints')
  assert distribute.worker_dir('/runs/a', tf.distribute.get_strategy()) == '/runs/a'


def test_wait_for_names_what_it_waited_for():
  with pytest.raises(UserError, match='waiting for the chief.s translations'):
    distribute.wait_for(lambda: False, "the chief's translations", timeout_seconds=0.2,
                        poll_seconds=0.05)
  calls = []
  distribute.wait_for(lambda: calls.append(1) or len(calls) > 2, 'three polls', poll_seconds=0)
  assert len(calls) == 3


def test_unknown_strategy_and_missing_tf_config_are_user_errors(monkeypatch):
  with pytest.raises(UserError, match='unknown --strategy'):
    distribute.create_strategy('tpu')
  monkeypatch.delenv('TF_CONFIG', raising=False)
  with pytest.raises(UserError, match='TF_CONFIG'):
    distribute.create_strategy('multi_worker')
