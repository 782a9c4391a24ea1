"""Every segmentation label mapping and class list, in one place.

A dataset's raw label ids become the project's train ids through a 256-entry lookup table:
`table[raw_id]` is the train id (0..K-1) or `IGNORE_LABEL` (255) for every id the benchmark does
not evaluate. The same table serves the builders (numpy, at build time) and the domain layer
(`map_labels`, a TF gather, at load time), so the two can never disagree.

- Cityscapes (and GTA5, whose labels use the Cityscapes labelIds): the 19 evaluated classes of
  the Cityscapes benchmark, docs/method.md §4's labelId → trainId list; everything else is void.
- SYNTHIA-SEQS: the 13 classes the CyCADA paper reports for fall → winter (its table's column
  order, which is also SYNTHIA's id order): SYNTHIA ids 1..12 → 0..11 and 15 (traffic light) →
  12; 0 (void), 13 and 14 (reserved) → void.
"""

import numpy as np
import tensorflow as tf

IGNORE_LABEL = 255
TABLE_SIZE = 256

CITYSCAPES_CLASSES = (
    'road', 'sidewalk', 'building', 'wall', 'fence', 'pole', 'traffic light', 'traffic sign',
    'vegetation', 'terrain', 'sky', 'person', 'rider', 'car', 'truck', 'bus', 'train',
    'motorcycle', 'bicycle')

# Cityscapes labelId → trainId (docs/method.md §4); ids not listed are ignored.
CITYSCAPES_LABEL_TO_TRAIN = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12,
    26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}

SYNTHIA_CLASSES = (
    'sky', 'building', 'road', 'sidewalk', 'fence', 'vegetation', 'pole', 'car', 'traffic sign',
    'pedestrian', 'bicycle', 'lanemarking', 'traffic light')

# SYNTHIA-SEQS class id (first channel of GT/LABELS) → train id; ids not listed are ignored.
SYNTHIA_LABEL_TO_TRAIN = {
    1: 0, 2: 1, 3: 2, 4: 3, 5: 4, 6: 5, 7: 6, 8: 7, 9: 8, 10: 9, 11: 10, 12: 11, 15: 12,
}


def lookup_table(mapping):
  """uint8 [256]: `mapping[raw_id]` where given, `IGNORE_LABEL` everywhere else."""
  table = np.full(TABLE_SIZE, IGNORE_LABEL, np.uint8)
  for raw_id, train_id in mapping.items():
    if not 0 <= raw_id < TABLE_SIZE or not 0 <= train_id <= IGNORE_LABEL:
      raise ValueError(f'label mapping {raw_id} -> {train_id} is outside 0..255')
    table[raw_id] = train_id
  return table


CITYSCAPES_LOOKUP = lookup_table(CITYSCAPES_LABEL_TO_TRAIN)
SYNTHIA_LOOKUP = lookup_table(SYNTHIA_LABEL_TO_TRAIN)


def map_labels(label, lookup):
  """Raw uint8 ids → uint8 train ids by gathering from the 256-entry `lookup` table (TF)."""
  table = tf.constant(np.asarray(lookup, np.uint8).reshape(TABLE_SIZE))
  return tf.gather(table, tf.cast(label, tf.int32))


def map_labels_np(label, lookup):
  """The numpy twin of `map_labels`, for builders; raw ids ≥ 256 (16-bit files) are ignored."""
  label = np.asarray(label)
  table = np.asarray(lookup, np.uint8).reshape(TABLE_SIZE)
  if label.dtype == np.uint8:
    return table[label]
  ids = label.astype(np.int64)
  return np.where((ids >= 0) & (ids < TABLE_SIZE), table[np.clip(ids, 0, TABLE_SIZE - 1)],
                  np.uint8(IGNORE_LABEL)).astype(np.uint8)
