"""Evaluation metrics from a confusion matrix (docs/method.md §3, IoU family §4), in NumPy.

Everything derives from n_ij = number of examples of class i predicted as j, which can be
accumulated batch by batch (`ConfusionMatrix`) and summed across workers, so the whole test set is
evaluated exactly, without averaging per-batch ratios.

Classes with nothing to measure are reported as `None`, never NaN: NaN does not survive
`json.dump` as valid JSON and silently poisons means.
"""

import math

import numpy as np


def confusion_matrix(labels, predictions, num_classes, ignore_label=255):
  """int64 [K, K] counts, rows = true class, columns = predicted class.

  Entries whose label is `ignore_label` are skipped (Cityscapes void pixels).

  Raises:
    ValueError: if shapes differ, or a kept label or a prediction is outside [0, num_classes).
  """
  labels = np.asarray(labels).astype(np.int64).ravel()
  predictions = np.asarray(predictions).astype(np.int64).ravel()
  if labels.shape != predictions.shape:
    raise ValueError(f'{labels.size} labels but {predictions.size} predictions')
  keep = labels != ignore_label
  labels, predictions = labels[keep], predictions[keep]
  for what, values in (('label', labels), ('prediction', predictions)):
    bad = (values < 0) | (values >= num_classes)
    if bad.any():
      raise ValueError(f'{what} {values[bad][0]} is outside [0, {num_classes}) '
                       f'(ignore_label={ignore_label})')
  flat = np.bincount(labels * num_classes + predictions, minlength=num_classes * num_classes)
  return flat.reshape(num_classes, num_classes).astype(np.int64)


def _total(cm):
  total = int(np.asarray(cm).sum())
  if total == 0:
    raise ValueError('the confusion matrix is empty: nothing was evaluated')
  return total


def accuracy(cm):
  """Σ_i n_ii / Σ_i t_i: the fraction of examples classified correctly.

  Raises:
    ValueError: for an empty matrix, where accuracy is undefined.
  """
  cm = np.asarray(cm)
  return float(np.trace(cm)) / _total(cm)


def per_class_accuracy(cm):
  """Recall of each class, n_ii / t_i, as a list; `None` for classes with no examples."""
  cm = np.asarray(cm)
  totals = cm.sum(axis=1)
  return [float(cm[i, i]) / totals[i] if totals[i] else None for i in range(cm.shape[0])]


def per_class_iou(cm):
  """IoU_i = n_ii / (t_i + Σ_j n_ji − n_ii) of each class, as a list of fractions.

  `None` for a class absent from both ground truth and prediction: its IoU is 0/0, and such a
  class says nothing about the model (docs/method.md §4 leaves it out of the mean). A class
  that is only predicted, or only in the ground truth, has IoU 0 and does count.
  """
  cm = np.asarray(cm, dtype=np.int64)
  true_totals, predicted_totals = cm.sum(axis=1), cm.sum(axis=0)
  unions = true_totals + predicted_totals - np.diag(cm)
  return [float(cm[i, i]) / unions[i] if unions[i] else None for i in range(cm.shape[0])]


def mean_iou(cm):
  """Mean of `per_class_iou` over the classes that are not `None`.

  Raises:
    ValueError: for an empty matrix, where every class is absent and the mean is undefined.
  """
  _total(cm)
  present = [iou for iou in per_class_iou(cm) if iou is not None]
  return float(np.mean(present))


def frequency_weighted_iou(cm):
  """Σ_i t_i·IoU_i / Σ_k t_k: IoU weighted by how many ground-truth pixels each class has.

  Classes absent from the ground truth have t_i = 0, so they add nothing, whether or not they
  were predicted (a false alarm still lowers the IoU of the true classes it was taken from).

  Raises:
    ValueError: for an empty matrix.
  """
  cm = np.asarray(cm, dtype=np.int64)
  total = _total(cm)
  true_totals = cm.sum(axis=1)
  weighted = sum(int(t) * iou for t, iou in zip(true_totals, per_class_iou(cm)) if iou is not None)
  return float(weighted) / total


def pixel_accuracy(cm):
  """Σ_i n_ii / Σ_i t_i over pixels: the segmentation name for `accuracy`."""
  return accuracy(cm)


def segmentation_metrics(cm, class_names, prefix='target_test_'):
  """The IoU family of one evaluation, as a stage writes it to metrics.json.

  Returns {prefix + 'miou', prefix + 'fwiou', prefix + 'pixel_accuracy': fractions in [0, 1],
  like the digit stages' accuracies, and 'per_class_iou': {class name: fraction or None}}.

  Raises:
    ValueError: if there is not one name per class, or the matrix is empty.
  """
  cm = np.asarray(cm, dtype=np.int64)
  if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or len(class_names) != cm.shape[0]:
    raise ValueError(f'need a square matrix and one name per class; got {cm.shape}, '
                     f'{len(class_names)} names')
  return {
      prefix + 'miou': mean_iou(cm),
      prefix + 'fwiou': frequency_weighted_iou(cm),
      prefix + 'pixel_accuracy': pixel_accuracy(cm),
      'per_class_iou': dict(zip((str(name) for name in class_names), per_class_iou(cm))),
  }


def mean_and_standard_error(values):
  """(mean, standard error) over runs, s.e. = sample std (ddof=1) / √n; one run has s.e. 0.

  This is how the paper reports "mean ± s.e. over 4 runs".

  Raises:
    ValueError: for no values.
  """
  values = np.asarray(values, dtype=np.float64).ravel()
  if values.size == 0:
    raise ValueError('mean_and_standard_error needs at least one value')
  mean = float(values.mean())
  if values.size == 1:
    return mean, 0.0
  return mean, float(values.std(ddof=1) / math.sqrt(values.size))


class ConfusionMatrix:
  """A confusion matrix accumulated over batches: `update(labels, predictions)`, then `.matrix`."""

  def __init__(self, num_classes, ignore_label=255):
    self.num_classes = num_classes
    self.ignore_label = ignore_label
    self._counts = np.zeros((num_classes, num_classes), dtype=np.int64)

  def update(self, labels, predictions):
    """Adds one batch (any matching shapes, NumPy arrays or eager tensors); returns self."""
    self._counts += confusion_matrix(labels, predictions, self.num_classes, self.ignore_label)
    return self

  @property
  def matrix(self):
    """A copy of the counts so far, int64 [K, K]."""
    return self._counts.copy()
