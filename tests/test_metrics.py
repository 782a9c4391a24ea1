"""Metrics on small confusion matrices worked out by hand."""

import math

import numpy as np
import pytest
import tensorflow as tf

from cycada_tf import metrics

# Labels/predictions below give (rows = true, columns = predicted; class 3 never appears):
#   class 0: 1 right, 1 taken for 1        [1, 1, 0, 0]   t_0 = 2, column sum 2
#   class 1: 2 right                       [0, 2, 0, 0]   t_1 = 2, column sum 3
#   class 2: 1 taken for 0                 [1, 0, 0, 0]   t_2 = 1, column sum 0
#   class 3: nothing                       [0, 0, 0, 0]
# The last pair has the void label 255 and is skipped.
LABELS = [0, 0, 1, 1, 2, 255]
PREDICTIONS = [0, 1, 1, 1, 0, 2]
EXPECTED = [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]


def _cm():
  return metrics.confusion_matrix(LABELS, PREDICTIONS, num_classes=4)


def test_confusion_matrix_counts_rows_true_columns_predicted():
  cm = _cm()
  assert cm.dtype == np.int64
  np.testing.assert_array_equal(cm, EXPECTED)


def test_accuracies():
  assert metrics.accuracy(_cm()) == pytest.approx(3 / 5)
  assert metrics.per_class_accuracy(_cm()) == [0.5, 1.0, 0.0, None]


def test_empty_matrix_is_an_error_not_nan():
  with pytest.raises(ValueError, match='empty'):
    metrics.accuracy(np.zeros((3, 3), np.int64))


def test_out_of_range_labels_are_rejected():
  with pytest.raises(ValueError, match='label 10'):
    metrics.confusion_matrix([10], [0], num_classes=10)
  with pytest.raises(ValueError, match='prediction -1'):
    metrics.confusion_matrix([0], [-1], num_classes=10)


def test_streaming_matches_one_shot_and_accepts_tensors():
  streaming = metrics.ConfusionMatrix(4)
  streaming.update(LABELS[:3], PREDICTIONS[:3])
  streaming.update(tf.constant(LABELS[3:]), tf.constant(PREDICTIONS[3:]))
  np.testing.assert_array_equal(streaming.matrix, EXPECTED)
  snapshot = streaming.matrix
  snapshot[0, 0] = 99
  assert streaming.matrix[0, 0] == 1  # .matrix is a copy.


def test_segmentation_shaped_inputs():
  labels = np.array([[[0, 1], [255, 1]]])
  predictions = np.array([[[0, 0], [1, 1]]])
  np.testing.assert_array_equal(metrics.confusion_matrix(labels, predictions, 2), [[1, 0], [1, 1]])


def test_mean_and_standard_error():
  mean, se = metrics.mean_and_standard_error([1.0, 2.0, 3.0, 4.0])
  # Sample variance = (1.5² + 0.5² + 0.5² + 1.5²) / 3 = 5/3; s.e. = √(5/3) / √4.
  assert mean == pytest.approx(2.5)
  assert se == pytest.approx(math.sqrt(5 / 3) / 2)
  assert metrics.mean_and_standard_error([0.7]) == (0.7, 0.0)
  with pytest.raises(ValueError):
    metrics.mean_and_standard_error([])
