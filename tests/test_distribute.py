"""Training does not depend on the replica count: 1 vs 2 CPU replicas on the same global batches.

Each real stage (source, which is also task's step; DTN with batch norm; pixel with its image
pool; pixel with the release's online semantic classifier; feature with its gate) runs a few
steps in `tests/replica_check.py`, once with 1 replica and once with 2, each in a fresh process
(logical CPUs must be configured before TensorFlow starts), with every dropout layer on. Per-step
losses must agree to rtol 1e-4 / atol 1e-5, and weights likewise, except for DTN's few
Adam-amplified rounding outliers (measured and explained at
`test_synchronized_batch_norm_makes_dtn_independent_of_replica_count`). Replica-local state and
dropout seed states must be identical on every replica, and a control run with per-replica batch
norm must *not* agree, so the comparison demonstrably notices replica-count-dependent
statistics."""

import collections
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from cycada_tf import distribute
from cycada_tf.data import pipeline
from cycada_tf.errors import UserError

from tests.conftest import REPO

# End-to-end, multi-process or benchmark: excluded from the fast tier (-m "not slow").
pytestmark = pytest.mark.slow
STAGES = 'source,dtn,pixel,pixel_online,feature'


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


def _assert_weights_match(runs, stage, outlier_fraction=0.0, outlier_atol=None):
  """Every weight within rtol 1e-4 / atol 1e-5, or all but `outlier_fraction` of the stage's
  weight elements, the rest within `outlier_atol`."""
  one, two = runs[1], runs[2]
  keys = sorted(k for k in one if k.startswith(f'{stage}/var/'))
  assert keys and keys == sorted(k for k in two if k.startswith(f'{stage}/var/'))
  compared = elements = outliers = 0
  for key in keys:
    if '/pool_' in key:  # The image pools' fakes: compared in the pixel test.
      continue
    if outlier_fraction:
      outliers += int(np.sum(~np.isclose(two[key], one[key], rtol=1e-4, atol=1e-5)))
      np.testing.assert_allclose(two[key], one[key], rtol=1e-4, atol=outlier_atol, err_msg=key)
    else:
      np.testing.assert_allclose(two[key], one[key], rtol=1e-4, atol=1e-5, err_msg=key)
    compared += 1
    elements += one[key].size
  assert compared >= 8
  assert outliers <= outlier_fraction * elements, (outliers, elements)


def _assert_dropout_was_on(runs, stage, min_layers):
  """Dropout ran in training (its seed advanced), identically on every replica and run."""
  one, two = runs[1], runs[2]
  keys = sorted(k for k in one if k.startswith(f'{stage}/seed/'))
  assert len(keys) >= min_layers
  assert keys == sorted(k for k in two if k.startswith(f'{stage}/seed/'))
  for key in keys:
    assert one[key][1] > 0, key  # The counter half of the seed state: masks were drawn.
    np.testing.assert_array_equal(two[key], one[key], err_msg=key)
    assert two[key.replace('/seed/', '/replica_spread/')] == 0.0, key


def test_source_step_is_independent_of_replica_count(runs):
  """The supervised step of `source`, `target_only` and `task` (LeNet, with its dropout)."""
  _assert_metrics_match(runs, 'source')
  _assert_weights_match(runs, 'source')
  _assert_dropout_was_on(runs, 'source', min_layers=2)


def test_synchronized_batch_norm_makes_dtn_independent_of_replica_count(runs):
  """DTN (synchronized batch norm, dropout on) for 2 steps: losses tight, weights tight but for
  0.005% of them.

  Why not everything to rtol 1e-4 / atol 1e-5, measured on this stage: 1 and 2 replicas sum the
  same numbers in a different order (each replica sums its 4 examples and the all-reduce adds the
  partial sums; batch norm all-reduces its statistics and their gradients too), so the step-1
  gradients differ by float32 rounding, at most 6e-6 of the largest gradient of each kernel and
  ~1e-9 to 2.5e-8 in absolute terms. Adam's first step is lr·g/(|g| + ε) with ε = 1e-7, so for
  the few kernel entries whose gradient is itself that small (|g| < 1e-6 for 0.04% of conv2's and
  0.09% of conv3's entries) the rounding changes the step by up to 0.13·lr = 1.3e-4. After 2 steps
  that leaves 164 of 3,134,922 elements (0.005%) outside rtol 1e-4 / atol 1e-5, by at most
  1.6e-4. Biases are not involved (DTN has none in front of batch norm), and both steps' losses
  agree to 6e-7 relative.

  Why only 2 steps: batch norm over 8 images turns those weight differences into pre-ReLU
  activation differences of up to 1.1e-3 by step 3, and one of block 3's 32,768 activations then
  lies on the other side of 0 (8.6e-6 in one run, -5.3e-5 in the other). That one ReLU unit
  switches its gradient contribution, which moves the gradient of conv3's batch-norm offset by
  1.3e-2; Adam turns that into lr-sized steps across whole channels, and from step 4 on the runs
  are two different, equally valid trajectories (loss 2.5171 vs 2.5158). That is float32
  sensitivity, not a dependence on the replica count: with dropout off the losses part the same
  way at step 5 instead (2.6e-4 relative), and LeNet, which has no batch statistics, stays within
  1.2e-6 in every weight over its 4 steps.
  """
  _assert_metrics_match(runs, 'dtn')
  # Bounds with margin over the measured 0.005% and 1.6e-4: 0.05% of the elements, by at most
  # half a learning-rate step. Any real replica-count dependence (the control below, a dropout
  # mask dealt to the wrong rows) moves nearly every weight.
  _assert_weights_match(runs, 'dtn', outlier_fraction=5e-4, outlier_atol=5e-4)
  _assert_dropout_was_on(runs, 'dtn', min_layers=4)
  # The control: per-replica statistics over 4 images instead of global ones over 8 change the
  # very first loss far beyond the tolerance above.
  first = runs[1]['dtn/metric/loss'][0]
  local = runs[2]['dtn_local_bn/metric/loss'][0]
  assert abs(local - first) > 1e-3 * abs(first)


def test_pixel_stage_with_global_image_pool_is_independent_of_replica_count(runs):
  """Pixel (instance norm, no bias in front of it; residual-block dropout on), 4 steps, tight."""
  _assert_metrics_match(runs, 'pixel')
  _assert_weights_match(runs, 'pixel')
  _assert_dropout_was_on(runs, 'pixel', min_layers=4)
  one, two = runs[1], runs[2]
  for name in ('pool_d_t', 'pool_d_s'):
    # Every replica holds the same, full pool ...
    for key in (k for k in two if k.startswith(f'pixel/replica_spread/{name}/')):
      assert two[key] == 0.0, key
    # ... and it is the 1-replica pool: same count, same fakes in the same slots.
    assert two[f'pixel/var/{name}/num_stored:0'] == one[f'pixel/var/{name}/num_stored:0'] == 4
    np.testing.assert_allclose(two[f'pixel/var/{name}/images:0'],
                               one[f'pixel/var/{name}/images:0'], rtol=1e-4, atol=1e-5)


def test_online_semantic_classifier_is_independent_of_replica_count(runs):
  """Pixel with the release's online classifier (synchronized batch norm) and its loss gate:
  the gate's loss is the global batch's on every replica, shut in step 1, open after."""
  _assert_metrics_match(runs, 'pixel_online')
  _assert_weights_match(runs, 'pixel_online')
  one, two = runs[1], runs[2]
  assert any(k.startswith('pixel_online/var/semantic_classifier/') for k in one)
  for run in (one, two):
    semantic = run['pixel_online/metric/loss/semantic']
    assert semantic[0] == 0.0 and np.all(semantic[1:] > 0.0), semantic
    assert run['pixel_online/replica_spread/semantic_classifier_loss/'
               'semantic_classifier_loss:0'] == 0.0
  np.testing.assert_allclose(two['pixel_online/var/semantic_classifier_loss/'
                                 'semantic_classifier_loss:0'],
                             one['pixel_online/var/semantic_classifier_loss/'
                                 'semantic_classifier_loss:0'], rtol=1e-5)


def test_feature_gate_decisions_are_independent_of_replica_count(runs):
  """Feature (LeNet f_T and D_feat, both with dropout on), 4 steps, tight."""
  _assert_metrics_match(runs, 'feature')
  _assert_weights_match(runs, 'feature')
  _assert_dropout_was_on(runs, 'feature', min_layers=4)
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
  with pytest.raises(UserError, match="--strategy='tpu' is unknown; valid: "):
    distribute.create_strategy('tpu')
  monkeypatch.delenv('TF_CONFIG', raising=False)
  with pytest.raises(UserError, match='TF_CONFIG'):
    distribute.create_strategy('multi_worker')
