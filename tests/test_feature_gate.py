"""The feature stage's gate and stop rule (paper appendix 6.1)."""

import pytest
import tensorflow as tf

from cycada_tf.stages import feature


def test_gate_opens_only_above_threshold():
  assert bool(feature.gate_open(tf.constant(0.61), 0.6))
  assert not bool(feature.gate_open(tf.constant(0.6), 0.6))
  assert not bool(feature.gate_open(tf.constant(0.2), 0.6))


def test_gate_state_averages_over_its_window():
  gate = feature.GateState(window=3)
  assert float(gate.record(tf.constant(0.9))) == pytest.approx(0.9)  # one value so far
  assert float(gate.record(tf.constant(0.3))) == pytest.approx(0.6)
  assert float(gate.record(tf.constant(0.6))) == pytest.approx(0.6)
  assert float(gate.record(tf.constant(0.0))) == pytest.approx(0.3)  # 0.9 left the window


def test_window_of_one_is_the_current_batch():
  gate = feature.GateState(window=1)
  gate.record(tf.constant(0.9))
  assert float(gate.record(tf.constant(0.1))) == pytest.approx(0.1)


def test_epoch_without_update_stops():
  reason = feature.no_update_stop_reason(4, {'updated': 0.0, 'discriminator_accuracy': 0.5})
  assert reason and 'epoch 5' in reason
  assert feature.no_update_stop_reason(4, {'updated': 0.01}) is None


def test_patience_counts_idle_epochs_in_a_row():
  gate = feature.GateState(window=1)
  idle, busy = {'updated': 0.0}, {'updated': 0.5}
  assert feature.no_update_stop_reason(0, idle, gate.idle_epochs, patience=3) is None
  assert feature.no_update_stop_reason(1, busy, gate.idle_epochs, patience=3) is None
  assert int(gate.idle_epochs.numpy()) == 0  # an update resets the run
  assert feature.no_update_stop_reason(2, idle, gate.idle_epochs, patience=3) is None
  assert feature.no_update_stop_reason(3, idle, gate.idle_epochs, patience=3) is None
  reason = feature.no_update_stop_reason(4, idle, gate.idle_epochs, patience=3)
  assert reason and 'epochs 3–5' in reason
