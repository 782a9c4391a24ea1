"""Metrics on small confusion matrices worked out by hand."""

import json
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


# A segmentation-shaped case for the IoU family (rows = true, columns = predicted):
#   class 0: 2 right, 1 taken for 1   [2, 1, 0, 0, 0]   t_0 = 3, column sum 4
#   class 1: 1 right, 1 taken for 3   [0, 1, 0, 1, 0]   t_1 = 2, column sum 2
#   class 2: in the ground truth, never predicted (both taken for 0)   t_2 = 2, column sum 0
#   class 3: predicted once, never in the ground truth                 t_3 = 0, column sum 1
#   class 4: predicted only on void pixels, which are skipped: absent from both
SEG_LABELS = np.array([[0, 0, 0, 1, 1], [2, 2, 255, 255, 255]])
SEG_PREDICTIONS = np.array([[0, 0, 1, 1, 3], [0, 0, 4, 4, 2]])
SEG_EXPECTED = [[2, 1, 0, 0, 0], [0, 1, 0, 1, 0], [2, 0, 0, 0, 0], [0] * 5, [0] * 5]
SEG_NAMES = ['road', 'sidewalk', 'building', 'sky', 'car']
# IoU_i = n_ii / (t_i + column_i - n_ii): 2 / (3 + 4 - 2), 1 / (2 + 2 - 1), 0 / 2, 0 / 1, 0 / 0.
SEG_IOU = [2 / 5, 1 / 3, 0.0, 0.0, None]


def _seg_cm():
  return metrics.confusion_matrix(SEG_LABELS, SEG_PREDICTIONS, num_classes=5)


def test_per_class_iou_by_hand():
  np.testing.assert_array_equal(_seg_cm(), SEG_EXPECTED)
  assert metrics.per_class_iou(_seg_cm()) == pytest.approx(SEG_IOU)
  assert metrics.per_class_iou(_seg_cm())[4] is None  # neither in the labels nor predicted


def test_mean_iou_excludes_only_classes_absent_from_both():
  # Classes 2 (never predicted) and 3 (never in the labels) count with IoU 0; class 4 does not.
  assert metrics.mean_iou(_seg_cm()) == pytest.approx((2 / 5 + 1 / 3 + 0 + 0) / 4)


def test_frequency_weighted_iou_and_pixel_accuracy():
  # Σ t_i IoU_i / Σ t = (3 · 2/5 + 2 · 1/3 + 2 · 0) / 7; the void pixels are not in Σ t.
  assert metrics.frequency_weighted_iou(_seg_cm()) == pytest.approx((6 / 5 + 2 / 3) / 7)
  assert metrics.pixel_accuracy(_seg_cm()) == pytest.approx(3 / 7)


def test_segmentation_metrics_are_fractions_keyed_like_metrics_json():
  found = metrics.segmentation_metrics(_seg_cm(), SEG_NAMES)
  assert set(found) == {'target_test_miou', 'target_test_fwiou', 'target_test_pixel_accuracy',
                        'per_class_iou'}
  assert found['target_test_miou'] == pytest.approx(11 / 60)
  assert found['target_test_fwiou'] == pytest.approx(4 / 15)
  assert found['target_test_pixel_accuracy'] == pytest.approx(3 / 7)
  assert list(found['per_class_iou']) == SEG_NAMES
  assert found['per_class_iou'] == pytest.approx(dict(zip(SEG_NAMES, SEG_IOU)))
  json.loads(json.dumps(found, allow_nan=False))  # None, never NaN: valid JSON
  source = metrics.segmentation_metrics(_seg_cm(), SEG_NAMES, prefix='source_test_')
  assert source['source_test_miou'] == found['target_test_miou']
  with pytest.raises(ValueError, match='one name per class'):
    metrics.segmentation_metrics(_seg_cm(), SEG_NAMES[:4])


def test_iou_of_an_empty_matrix_is_an_error_not_nan():
  empty = np.zeros((3, 3), np.int64)
  assert metrics.per_class_iou(empty) == [None, None, None]
  for metric in (metrics.mean_iou, metrics.frequency_weighted_iou, metrics.pixel_accuracy):
    with pytest.raises(ValueError, match='empty'):
      metric(empty)


def test_perfect_segmentation():
  cm = metrics.confusion_matrix([0, 1, 1, 255], [0, 1, 1, 0], num_classes=3)
  assert metrics.per_class_iou(cm) == [1.0, 1.0, None]
  assert metrics.mean_iou(cm) == metrics.frequency_weighted_iou(cm) == 1.0


def test_mean_and_standard_error():
  mean, se = metrics.mean_and_standard_error([1.0, 2.0, 3.0, 4.0])
  # Sample variance = (1.5² + 0.5² + 0.5² + 1.5²) / 3 = 5/3; s.e. = √(5/3) / √4.
  assert mean == pytest.approx(2.5)
  assert se == pytest.approx(math.sqrt(5 / 3) / 2)
  assert metrics.mean_and_standard_error([0.7]) == (0.7, 0.0)
  with pytest.raises(ValueError):
    metrics.mean_and_standard_error([])
