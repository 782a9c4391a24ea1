"""Segmentation preprocessing: resizing, crops and flips applied identically to image and label."""

import numpy as np
import tensorflow as tf

from cycada_tf.data import pipeline


def _example(height=40, width=60):
  """An image whose pixel (r, c) encodes its position, and a label with the same encoding."""
  rows, cols = np.mgrid[0:height, 0:width]
  image = np.stack([rows, cols, np.zeros_like(rows)], axis=-1).astype(np.uint8)
  label = ((rows * 7 + cols) % 19).astype(np.uint8)
  label[0, 0] = 255
  return image, label


def test_resized_size_keeps_the_aspect_ratio_on_multiples_of_8():
  height, width = (int(x) for x in pipeline.resized_size(1052, 1914, 1024))
  assert width == 1024 and height % 8 == 0 and abs(height - 1052 * 1024 / 1914) <= 4
  assert [int(x) for x in pipeline.resized_size(37, 53, 0)] == [37, 53]


def test_labels_are_resized_nearest_never_interpolated():
  image, label = _example(40, 60)
  resized_image, resized_label = pipeline.resize_segmentation(image, label, 32)
  assert resized_image.dtype == tf.uint8 and resized_label.dtype == tf.uint8
  assert resized_image.shape[:2] == resized_label.shape == (24, 32)
  # Every resized label value is one of the original ids: nothing in between.
  assert set(np.unique(resized_label.numpy())) <= set(np.unique(label))
  # Without resize_label (evaluation), the label keeps its full resolution.
  _, full = pipeline.resize_segmentation(image, label, 32, resize_label=False)
  np.testing.assert_array_equal(full.numpy(), label)


def test_crop_and_flip_are_the_same_for_image_and_label():
  image, label = _example()
  seen_flip = seen_plain = False
  for position in range(20):
    seed = tf.constant([3, position], tf.int64)
    crop_image, crop_label = pipeline.random_crop_and_flip(image, label, (16, 24), seed)
    crop_image, crop_label = crop_image.numpy(), crop_label.numpy()
    assert crop_image.shape == (16, 24, 3) and crop_label.shape == (16, 24)
    rows = crop_image[..., 0].astype(int)
    cols = crop_image[..., 1].astype(int)
    # The label at each output pixel is the label of the source pixel the image came from.
    expected = label[rows, cols]
    np.testing.assert_array_equal(crop_label, expected)
    flipped = cols[0, 0] > cols[0, -1]
    seen_flip |= flipped
    seen_plain |= not flipped
    # Same seed, same crop.
    again, _ = pipeline.random_crop_and_flip(image, label, (16, 24), seed)
    np.testing.assert_array_equal(again.numpy(), crop_image)
  assert seen_flip and seen_plain


def test_a_crop_larger_than_the_image_pads_labels_with_ignore():
  image, label = _example(10, 12)
  crop_image, crop_label = pipeline.random_crop_and_flip(
      image, label, (16, 20), tf.constant([0, 0], tf.int64), flip=False)
  assert crop_image.shape == (16, 20, 3)
  assert (crop_label.numpy()[10:] == 255).all() and (crop_label.numpy()[:, 12:] == 255).all()
  np.testing.assert_array_equal(crop_label.numpy()[:10, :12], label)
