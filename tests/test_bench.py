"""`train.bench`, the FLOP counter and bfloat16 mixed precision, on tiny configs.

The bench runs in subprocesses as users run it; the FLOP counts are checked against hand counts,
so a counter that misses backprop convolutions or counts pruned ones fails here.
"""

import json
import math
import subprocess
import sys

from absl import flags
from absl.testing import flagsaver
import keras
import numpy as np
import pytest
import tensorflow as tf

from configs import uci_mnist
from cycada_tf import flops
from cycada_tf import precision
from cycada_tf.data import pairs
from cycada_tf.errors import UserError
from cycada_tf.stages import common
from train import bench

from tests.conftest import REPO

# End-to-end, multi-process or benchmark: excluded from the fast tier (-m "not slow").
pytestmark = pytest.mark.slow
# LeNet training step per example: forward conv1 + conv2 + fc + logits MACs ×2, backward the same
# twice except conv1's input gradient (images need none), which TF prunes.
_CONV1, _CONV2 = 24 * 24 * 25 * 20, 8 * 8 * 25 * 20 * 50
_FC, _LOGITS = 800 * 500, 500 * 10
LENET_STEP_FLOPS = 2 * (3 * (_CONV1 + _CONV2 + _FC + _LOGITS) - _CONV1)


def run_bench(*args, timeout=240, with_stderr=False):
  result = subprocess.run(
      [sys.executable, '-m', 'train.bench', '--steps=3', '--warmup=1', '--peak_sizes=256',
       '--peak_repeats=1', *args], cwd=REPO, capture_output=True, text=True, timeout=timeout)
  assert result.returncode == 0, result.stderr[-3000:]
  lines = result.stdout.strip().splitlines()
  assert len(lines) == 1, result.stdout  # one JSON line, nothing else on stdout
  return (json.loads(lines[0]), result.stderr) if with_stderr else json.loads(lines[0])


def test_flops_counts_convs_matmuls_and_their_gradients():
  kernel = tf.Variable(tf.ones([3, 3, 3, 5]))
  weights = tf.Variable(tf.ones([320, 4]))

  @tf.function
  def step(images, n):
    with tf.GradientTape() as tape:
      maps = tf.nn.conv2d(images, kernel, 1, 'SAME')  # [2, 8, 8, 5]
      loss = tf.reduce_sum(tf.matmul(tf.reshape(maps, [2, 320]), weights))
    grads = tape.gradient(loss, [kernel, weights])
    extra = tf.cond(loss > 0, lambda: tf.matmul(weights, weights, transpose_a=True),
                    lambda: tf.zeros([4, 4]))
    for _ in tf.range(n):  # the trainer's step sits in a loop body: counted once with count_loops
      extra = tf.matmul(extra, extra)
    return grads, extra

  graph = step.get_concrete_function(tf.TensorSpec([2, 8, 8, 3]), tf.constant(1)).graph
  conv = 2 * (2 * 8 * 8 * 5) * 27  # forward, and again for the filter gradient
  dense = 2 * 2 * 320 * 4          # forward, input gradient, weight gradient
  expected = 2 * conv + 3 * dense + 2 * 4 * 4 * 320  # + the costlier cond branch
  assert flops.graph_flops(graph) == expected
  assert flops.graph_flops(graph, count_loops=True) == expected + 2 * 4 * 4 * 4


def test_flops_refuses_a_loop_with_counted_ops_inside_the_counted_loop():
  weights = tf.Variable(tf.ones([4, 4]))

  @tf.function
  def run_steps(n):
    total = tf.zeros([4, 4])
    for _ in tf.range(n):  # the trainer's loop: its body is one step
      x = tf.matmul(weights, weights)
      for _ in tf.range(n):  # runs n times a step: a per-step count cannot know n
        x = tf.matmul(x, weights)
      total += x
    return total

  graph = run_steps.get_concrete_function(tf.constant(2)).graph
  with pytest.raises(flops.UnknownShapeError, match='inside the counted loop'):
    flops.graph_flops(graph, count_loops=True)


def test_source_bench_reports_speed_flops_and_peak():
  # Epochs of 2 steps, while warm-up and timing read 6: the bench reads past an epoch's end.
  result = run_bench('--stage=source', '--config.source.batch_size=8', '--examples_per_epoch=16')
  assert result['stage'] == 'source' and result['mode'] == 'step'
  assert result['examples_per_second'] > 0 and result['metrics_finite']
  assert result['flops_per_example'] == LENET_STEP_FLOPS
  assert result['flops_per_step'] == 8 * LENET_STEP_FLOPS
  assert result['peak_matmul_gflops'] > 0 and result['fraction_of_peak'] > 0
  assert result['achieved_gflops'] == pytest.approx(
      result['fraction_of_peak'] * result['peak_matmul_gflops'])
  assert result['kernels'] == 'cpu_tuned'  # auto, on this CPU-only machine


def test_pixel_bench_runs_the_pixel_step_in_bf16():
  result, stderr = run_bench(
      '--stage=pixel', '--precision=bf16', '--config.pixel.batch_size=4',
      '--config.model.generator_filters=4', '--config.model.discriminator_filters=4',
      with_stderr=True)
  # Grappler optimised the whole step: with TF's own LeakyReLU gradient the remapper pass failed
  # on the discriminators' conv + bias + LeakyReLU (see `ops.leaky_relu`).
  assert 'remapper failed' not in stderr
  assert result['precision'] == 'bf16' and result['metrics_finite']
  assert {'loss/cycle', 'loss/semantic', 'loss/d_t', 'loss/d_s'} <= set(result['last_call_metrics'])
  assert result['examples_per_second'] > 0 and result['fraction_of_peak'] > 0
  # Two generators and two discriminators run forward and backward: far more than f_S's step.
  assert result['flops_per_example'] > LENET_STEP_FLOPS
  assert result['peak_matmul_gflops_bf16'] > 0


def test_segmentation_steps_are_benchmarked_without_their_data():
  # gta5_cityscapes' data is not on this machine: step mode needs none. The source step runs
  # the segmentation net on crops with per-pixel labels; pixel and feature go through the same
  # code (docs/performance.md "Segmentation" has all three).
  stage = 'source'
  result = run_bench(f'--stage={stage}', '--dataset=gta5_cityscapes',
                     '--config.model.width=0.25', '--config.model.generator_filters=4',
                     '--config.model.discriminator_filters=4',
                     '--config.data.crop_size=(32, 64)', '--config.pixel.crop_size=(32, 32)')
  assert result['pair'] == 'gta5_cityscapes' and result['metrics_finite']
  assert result['examples_per_second'] > 0 and result['fraction_of_peak'] > 0
  assert result['flops_per_step'] > 0
  assert 'accuracy' in result['last_call_metrics']


def test_both_precisions_in_one_process_with_speedup_and_op_seconds(tmp_path):
  """One process times both precisions and profiles each (`--profile_dir`).

  Under the profiler each precision's calls run in a block of their own; the alternation of
  their order is the fake-based test below, and in a real process the `--kernels=both` run's.
  """
  result = run_bench('--stage=source', '--precision=both', '--config.source.batch_size=8',
                     '--config.train.steps_per_call=1', f'--profile_dir={tmp_path}')
  assert result['precision'] == 'both'
  assert result['filter_gradient'] in ('swapped', 'native')  # bf16 on cpu_tuned (auto here)
  for name in ('fp32', 'bf16'):
    fields = result[name]
    assert fields['timed_steps'] == 3 and len(fields['examples_per_second_windows']) == 3
    assert fields['flops_per_example'] == LENET_STEP_FLOPS and fields['metrics_finite']
    assert fields['fraction_of_peak'] > 0
    assert (tmp_path / name / 'plugins' / 'profile').is_dir()
    seconds = fields['op_seconds_by_type']
    # LeNet's step is convolutions (oneDNN's or TF's kernels) and their gradients.
    assert any('Conv2D' in op for op in seconds), seconds
    assert all(value >= 0 for value in seconds.values())
  # The speed-up is the median over pairs of calls, not a ratio of two separate medians.
  ratios = [b / f for f, b in zip(result['fp32']['examples_per_second_windows'],
                                  result['bf16']['examples_per_second_windows'])]
  assert len(result['bf16_speedup_windows']) == 3
  assert result['bf16_speedup'] == pytest.approx(sorted(ratios)[1], rel=0.02)
  assert result['peak_matmul_gflops_bf16'] > 0


def test_both_kernel_paths_are_timed_alternately_and_named():
  # The source step: the alternation and naming are what is tested here, and tracing it twice
  # is far cheaper than the pixel step (tests/test_kernels.py checks that both paths agree).
  result = run_bench('--stage=source', '--kernels=both', '--config.source.batch_size=8',
                     '--config.train.steps_per_call=1')
  assert result['kernels'] == 'both' and isinstance(result['cpu_flags'], list)
  assert 'filter_gradient' not in result  # float32: the bf16 filter gradient does not apply
  for path in ('stock', 'cpu_tuned'):
    assert result[path]['kernels'] == path and result[path]['metrics_finite']
    assert result[path]['flops_per_example'] > 0
  ratios = [t / s for s, t in zip(result['stock']['examples_per_second_windows'],
                                  result['cpu_tuned']['examples_per_second_windows'])]
  assert result['cpu_tuned_speedup'] == pytest.approx(sorted(ratios)[1], rel=0.02)


def test_calls_alternate_their_order_so_drift_hits_both_precisions_alike():
  calls = []

  def fake(name):
    return bench.PreparedStep(call=lambda n: calls.append((name, n)) or {'loss': float(n)},
                              flops_per_step=1.0, batch_size=1, steps_per_call=2)

  timings, metrics = bench.time_calls([fake('fp32'), fake('bf16')], [2, 2, 2, 1])
  assert calls == [('fp32', 2), ('bf16', 2), ('bf16', 2), ('fp32', 2), ('fp32', 2), ('bf16', 2),
                   ('bf16', 1), ('fp32', 1)]
  assert [len(t) for t in timings] == [4, 4] and metrics == [{'loss': 1.0}, {'loss': 1.0}]


@flagsaver.flagsaver
def test_both_precisions_need_step_mode():
  flags.FLAGS(['bench', '--stage=source', '--mode=input', '--precision=both'])
  with pytest.raises(UserError, match='--precision=both is for --mode=step'):
    bench.run()


@flagsaver.flagsaver
def test_bench_rejects_stages_without_a_training_step():
  flags.FLAGS(['bench', '--stage=eval'])
  with pytest.raises(UserError, match='cannot be benchmarked'):
    bench.run()


def _tiny_context():
  config = uci_mnist.get_config()
  config.model.update(generator_filters=4, discriminator_filters=4)
  config.pixel.batch_size = 4
  config.source.batch_size = 4
  return common.Context(config=config, pair=pairs.PAIRS['uci_mnist'], model_dir='unused')


@pytest.mark.parametrize('stage_name', ['source', 'pixel'])
def test_bf16_step_gives_finite_float32_losses_and_restores_policy(stage_name):
  ctx = _tiny_context()
  with precision.policy_scope('bf16'):
    stage = bench.build_stage(ctx, stage_name, num_train=40)
    batch = bench.synthetic_batch(ctx.image_shape, 4, 10, paired=stage_name == 'pixel')
    batch = tf.nest.map_structure(tf.constant, batch)
    outputs = stage.replica_step(batch)  # eagerly: the compiled path is the subprocess tests'
  for model in stage.models.values():
    assert all(v.dtype == tf.float32 for v in model.trainable_variables)  # float32 masters
    layers = model._flatten_layers()  # pylint: disable=protected-access
    assert any(l.compute_dtype == 'bfloat16' for l in layers)
  for name, value in outputs.items():
    assert value.dtype == tf.float32, name
    assert math.isfinite(float(value)), name
  assert keras.mixed_precision.global_policy().name == 'float32'
  assert precision.current() == 'fp32'


def test_unknown_precision_is_a_user_error():
  with pytest.raises(UserError, match='valid: fp32, bf16'):
    with precision.policy_scope('fp16'):
      pass
  assert keras.mixed_precision.global_policy().name == 'float32'


def test_bf16_networks_return_float32():
  from cycada_tf import models  # pylint: disable=g-import-not-at-top
  with precision.policy_scope('bf16'):
    nets = (models.build_classifier('lenet'), models.build_generator('digit', 1, filters=4),
            models.build_image_discriminator('patchgan', filters=4))
    outputs = [tf.nest.flatten(net(tf.zeros([2, 28, 28, 1]))) for net in nets]
  assert all(t.dtype == tf.float32 for out in outputs for t in out)
  assert np.isfinite(np.concatenate([np.ravel(t) for out in outputs for t in out])).all()


def test_input_mode_reads_the_real_pipeline_through_epochs_and_iterators(offline_data_dir):
  # 2 batches per epoch; warm-up and timing read 35 (calls of 10, 10, 10 and 5), i.e. into a
  # second group of `train.epochs_per_iterator` (10) epochs, which needs a new iterator, as in
  # `fit`.
  result = run_bench('--stage=source', '--mode=input', f'--data_dir={offline_data_dir}',
                     '--config.source.batch_size=512', '--steps=25')
  assert result['mode'] == 'input' and result['examples_per_second'] > 0
  assert result['global_batch_size'] == 512 and 'flops_per_step' not in result
  assert result['steps_per_epoch'] == 2 and result['timed_steps'] == 25
