"""`train.bench_ops`: every comparison runs, forward and backward, in both precisions."""

import pytest
import tensorflow as tf

from train import bench_ops

# End-to-end, multi-process or benchmark: excluded from the fast tier (-m "not slow").
pytestmark = pytest.mark.slow


@pytest.mark.parametrize('dtype', [tf.float32, tf.bfloat16])
def test_every_op_is_timed_for_both_implementations(dtype):
  results = bench_ops.run((2, 5, 5, 8), dtype, repeats=1)
  assert [r['op'] for r in results] == ['reflection pad 1', 'dropout 0.5', 'instance norm',
                                        'transpose to HWNC', 'transpose to CHWN']
  for result in results:
    assert result['dtype'] == dtype.name and len(result['implementations']) == 2
    for timing in result['implementations'].values():
      assert timing['forward_ms'] > 0 and timing['forward_backward_ms'] > 0


def test_median_milliseconds_times_the_function():
  calls = []
  assert bench_ops.median_milliseconds(lambda: calls.append(1), repeats=3) >= 0
  assert len(calls) == 5  # Two warm-up calls, then the timed ones.
