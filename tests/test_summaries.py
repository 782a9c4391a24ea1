"""Image helpers: grid layout pixel by pixel, the heat map, PNG round trips, TensorBoard."""

import glob
import os

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from cycada_tf import summaries


def _ramp(n, h, w, c, offset=0.0):
  values = np.linspace(-1.0, 1.0, n * h * w * c, dtype=np.float32) + offset
  return np.clip(values, -1, 1).reshape(n, h, w, c)


def test_to_uint8_rgb_maps_range_and_expands_grey():
  image = summaries.to_uint8_rgb(np.array([[[-1.0], [0.0], [1.0], [3.0]]]))
  assert image.shape == (1, 4, 3) and image.dtype == np.uint8
  np.testing.assert_array_equal(image[0, :, 0], [0, 128, 255, 255])
  np.testing.assert_array_equal(image[..., 0], image[..., 2])


def test_image_grid_layout():
  first = _ramp(2, 4, 5, 1)           # Two greyscale images in row 0.
  second = _ramp(1, 4, 5, 3, 0.1)     # One colour image in row 1.
  grid = summaries.image_grid([first, second])
  # 2 rows of 4 px and 3 paddings of 2 px; 2 columns of 5 px and 3 paddings.
  assert grid.shape == (2 * 4 + 3 * 2, 2 * 5 + 3 * 2, 3)
  assert grid.dtype == np.uint8
  expected_first = summaries.to_uint8_rgb(first[1])
  # Row 0, column 1 starts at (2, 2 + 5 + 2).
  np.testing.assert_array_equal(grid[2:6, 9:14], expected_first)
  # Row 1, column 0 starts at (2 + 4 + 2, 2).
  np.testing.assert_array_equal(grid[8:12, 2:7], summaries.to_uint8_rgb(second[0]))
  assert (grid[0] == 255).all() and (grid[:, 7:9] == 255).all()  # Padding.
  assert (grid[8:12, 9:14] == 255).all()  # Row 1 has no second image.


def test_translation_grid_one_triple_per_row():
  originals = _ramp(3, 4, 4, 1)
  translated = _ramp(3, 4, 4, 3, 0.5)
  reconstructed = _ramp(3, 4, 4, 1, -0.5)
  grid = summaries.translation_grid(originals, translated, reconstructed, max_examples=2)
  assert grid.shape == (2 * 6 + 2, 3 * 6 + 2, 3)
  # Example 1 is row 1: translated (column 1) at (8, 8), reconstructed (column 2) at (8, 14).
  np.testing.assert_array_equal(grid[8:12, 8:12], summaries.to_uint8_rgb(translated[1]))
  np.testing.assert_array_equal(grid[8:12, 14:18], summaries.to_uint8_rgb(reconstructed[1]))
  np.testing.assert_array_equal(grid[2:6, 2:6], summaries.to_uint8_rgb(originals[0]))


def _colour_present(image, colour):
  return bool((image.reshape(-1, 3) == np.array(colour)).all(axis=1).any())


def test_confusion_matrix_image():
  cm = np.array([[50, 0, 0], [3, 1, 0], [0, 0, 0]])  # Row 2 has no examples.
  image = summaries.confusion_matrix_image(cm, ['zero', 'one', 'two'])
  assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8
  assert image.shape[0] > 3 * 10 and image.shape[1] > 3 * 10
  assert _colour_present(image, summaries._heat_colour(1.0))   # Row 0 is all on the diagonal.
  assert _colour_present(image, summaries._heat_colour(0.75))  # Row 1: 3 of 4.
  assert _colour_present(image, (200, 200, 200))               # The empty row.
  other = summaries.confusion_matrix_image(cm * 1000, ['zero', 'one', 'two'])
  assert other.shape[1] > image.shape[1]  # Cells widen to fit larger counts.
  with pytest.raises(ValueError):
    summaries.confusion_matrix_image(cm, ['zero', 'one'])


@pytest.mark.parametrize('shape', [(5, 7, 3), (5, 7, 1), (5, 7)])
def test_save_png_round_trips(shape, tmp_path):
  array = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
  path = str(tmp_path / 'sub' / 'image.png')
  assert summaries.save_png(array, path) == path
  loaded = np.asarray(Image.open(path))
  np.testing.assert_array_equal(loaded, array.reshape(loaded.shape))
  assert os.listdir(tmp_path / 'sub') == ['image.png']  # No temporary file left behind.


def test_save_png_rejects_float():
  with pytest.raises(ValueError, match='uint8'):
    summaries.save_png(np.zeros((2, 2, 3), np.float32), '/nonexistent/x.png')


def test_write_image_logs_one_image(tmp_path):
  image = summaries.image_grid([_ramp(2, 4, 4, 1)])
  assert not summaries.write_image('no_writer', image, step=0)
  writer = tf.summary.create_file_writer(str(tmp_path))
  with writer.as_default():
    assert summaries.write_image('pixel/translations', image, step=3)
  writer.flush()
  events = glob.glob(str(tmp_path / 'events.out.tfevents.*'))
  tags = [(value.tag, event.step)
          for event in tf.compat.v1.train.summary_iterator(events[0])
          for value in event.summary.value]
  assert ('pixel/translations', 3) in tags
