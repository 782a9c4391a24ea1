"""The source set rendered in target style by G_ST, written once as a domain of its own.

The `task` stage trains f_T on (G_ST(x_s), y_s) and the `feature` stage uses the same images as
its source side. Translating once into TFRecords (uint8, exactly what the exported translator
returns) instead of on every step means the generator runs once per image rather than once per
image per epoch, both stages see identical inputs, and users can inspect the result. The
directory is then an ordinary domain, `translated:DIR`, for every pipeline function.

Layout: `DIR/<split>.tfrecord` and `DIR/info.json`; info.json is written last, atomically, so a
directory without it is an interrupted translation and is redone. Segmentation translations
(`task='segmentation'`) store each example's label map and both shapes, since whole images of a
real pair differ in size; the labels stay at the resolution they came in. info.json also records
what produced the images (`produced_by`, e.g. the generator's checkpoint), so a translation by a
generator that has since been retrained is redone rather than reused.
"""

import json
import os

import numpy as np
import tensorflow as tf

from cycada_tf.errors import UserError

PREFIX = 'translated:'
INFO_FILE = 'info.json'


def to_uint8(images):
  """[-1, 1] floats → uint8 0..255, the inverse of the pipeline's scaling (rounded)."""
  return tf.cast(tf.round(tf.clip_by_value((images + 1.0) * 127.5, 0.0, 255.0)), tf.uint8)


def is_complete(directory, produced_by=None):
  """True if `directory` holds a whole translation and, if `produced_by` is given, one by it."""
  path = os.path.join(directory, INFO_FILE)
  if not os.path.exists(path):
    return False
  if produced_by is None:
    return True
  with open(path) as f:
    return json.load(f).get('produced_by') == produced_by


def _bytes_feature(array):
  return tf.train.Feature(bytes_list=tf.train.BytesList(value=[array.tobytes()]))


def _ints_feature(values):
  return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))


def _example(image, label, segmentation):
  if not segmentation:
    features = {'image': _bytes_feature(image), 'label': _ints_feature([label])}
  else:
    features = {'image': _bytes_feature(image), 'image_shape': _ints_feature(image.shape),
                'label': _bytes_feature(label.astype(np.uint8)),
                'label_shape': _ints_feature(label.shape)}
  return tf.train.Example(features=tf.train.Features(feature=features))


def write(directory, translate, datasets, num_classes, class_names, produced_by=None,
          task='classification'):
  """Writes `translate(images)` for each split's (images in [-1, 1], labels) batches.

  `datasets` maps split name → dataset of float batches; `translate` maps a float batch to a
  float batch in [-1, 1]; `produced_by` (JSON) names the translator for `is_complete`; `task`
  'segmentation' stores uint8 label maps. Returns the info dict written to info.json.
  """
  segmentation = task == 'segmentation'
  os.makedirs(directory, exist_ok=True)
  # A previous translation's info.json would vouch for the half-rewritten splits: drop it first.
  info_path = os.path.join(directory, INFO_FILE)
  if os.path.exists(info_path):
    os.remove(info_path)
  counts, shape = {}, None
  for split, dataset in datasets.items():
    path = os.path.join(directory, f'{split}.tfrecord')
    count = 0
    with tf.io.TFRecordWriter(path + '.tmp') as writer:
      for images, labels in dataset:
        translated = to_uint8(translate(images)).numpy()
        shape = list(translated.shape[1:])
        for image, label in zip(translated, labels.numpy()):
          writer.write(_example(image, label, segmentation).SerializeToString())
          count += 1
    os.replace(path + '.tmp', path)
    counts[split] = count
  info = {'num_examples': counts, 'num_classes': int(num_classes),
          'class_names': list(class_names), 'image_shape': shape, 'produced_by': produced_by}
  if segmentation:
    info.update(task=task, image_shape=None)  # one shape per example
  tmp = info_path + '.tmp'
  with open(tmp, 'w') as f:
    json.dump(info, f, indent=2)
  os.replace(tmp, info_path)
  return info


def read_info(directory):
  if not is_complete(directory):
    raise UserError(f'translated domain {directory} is missing or incomplete (no {INFO_FILE}); '
                    f'rerun the stage that writes it (--stage=task).')
  with open(os.path.join(directory, INFO_FILE)) as f:
    return json.load(f)


def load(directory, split):
  """Unbatched (uint8 image [H, W, C], int64 label) pairs in the order they were written;
  segmentation: (uint8 image, uint8 label map [H, W])."""
  info = read_info(directory)
  if split not in info['num_examples']:
    raise UserError(f'translated domain {directory} has no {split!r} split; it has '
                    f'{", ".join(sorted(info["num_examples"]))}.')
  if info.get('task') == 'segmentation':
    features = {'image': tf.io.FixedLenFeature([], tf.string),
                'image_shape': tf.io.FixedLenFeature([3], tf.int64),
                'label': tf.io.FixedLenFeature([], tf.string),
                'label_shape': tf.io.FixedLenFeature([2], tf.int64)}

    def parse(record):
      parsed = tf.io.parse_single_example(record, features)
      image = tf.reshape(tf.io.decode_raw(parsed['image'], tf.uint8), parsed['image_shape'])
      label = tf.reshape(tf.io.decode_raw(parsed['label'], tf.uint8), parsed['label_shape'])
      return tf.ensure_shape(image, [None, None, 3]), tf.ensure_shape(label, [None, None])
  else:
    shape = info['image_shape']
    features = {'image': tf.io.FixedLenFeature([], tf.string),
                'label': tf.io.FixedLenFeature([], tf.int64)}

    def parse(record):
      parsed = tf.io.parse_single_example(record, features)
      image = tf.reshape(tf.io.decode_raw(parsed['image'], tf.uint8), shape)
      return image, parsed['label']

  return tf.data.TFRecordDataset(os.path.join(directory, f'{split}.tfrecord')).map(
      parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def read_all(directory, split):
  """The whole split as numpy arrays (tests and inspection)."""
  images, labels = [], []
  for image, label in load(directory, split):
    images.append(image.numpy())
    labels.append(label.numpy())
  return np.stack(images), np.array(labels)
