"""Image helpers: grid layout pixel by pixel, the heat map, PNG round trips, TensorBoard, and
the HParams summary read back from its events file."""

import glob
import os

import ml_collections
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image
from PIL import ImageDraw
from PIL import ImageFont
import pytest
import tensorflow as tf
from tensorboard.plugins.hparams import plugin_data_pb2

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


def _ink(image):
  """Where black text is: dark pixels of an RGB image (array or PIL)."""
  return np.asarray(image)[..., :3].max(axis=-1) < 128


def _text_ink(text, rotate=False):
  """The ink of `text` in PIL's default font, cropped to it, optionally read bottom to top."""
  font = ImageFont.load_default()
  left, top, right, bottom = ImageDraw.Draw(Image.new('RGB', (1, 1))).textbbox((0, 0), text,
                                                                              font=font)
  image = Image.new('RGB', (right - left, bottom - top), 'white')
  ImageDraw.Draw(image).text((-left, -top), text, fill='black', font=font)
  return _ink(image.rotate(90, expand=True) if rotate else image)


def _find(mask, template):
  """The (row, column) top-left corners where `template` matches `mask` exactly."""
  if mask.shape[0] < template.shape[0] or mask.shape[1] < template.shape[1]:
    return []
  windows = sliding_window_view(mask, template.shape)
  return [tuple(corner) for corner in np.argwhere((windows == template).all(axis=(2, 3)))]


def _grid_box(image):
  """(top, left, bottom, right) of the heat map's cells: the extent of their grey outlines."""
  rows, columns = np.nonzero((image == 128).all(axis=-1))
  return rows.min(), columns.min(), rows.max(), columns.max()


def test_confusion_matrix_image_labels_its_axes():
  cm = np.arange(100).reshape(10, 10) % 7
  image = summaries.confusion_matrix_image(cm, [f'c{i}' for i in range(10)])
  top, left, bottom, right = _grid_box(image)
  cell = (right - left) // 10
  assert right - left == bottom - top == 10 * cell
  ink = _ink(image)

  predicted = _text_ink('predicted class')
  (found,) = _find(ink, predicted)  # once, level, above the column indices, centred on them
  assert found[0] + predicted.shape[0] < top - cell // 2
  assert abs(found[1] + predicted.shape[1] / 2 - (left + right) / 2) <= 2
  true = _text_ink('true class', rotate=True)
  (found,) = _find(ink, true)  # once, read bottom to top, left of the row names, centred
  label_right = found[1] + true.shape[1]
  assert label_right < left and ink[top:bottom, label_right:left].any()  # row names between
  assert abs(found[0] + true.shape[0] / 2 - (top + bottom) / 2) <= 2
  band = ink[:, found[1]:label_right].copy()
  band[found[0]:found[0] + true.shape[0]] = False
  assert not band.any()  # the label has its columns to itself: no row name overlaps it

  # The counts region is still the heat map: each cell's colour is its row's fraction.
  fractions = cm / cm.sum(axis=1, keepdims=True)
  for i in range(10):
    for j in range(10):
      np.testing.assert_array_equal(image[top + i * cell + 2, left + j * cell + 2],
                                    summaries._heat_colour(fractions[i, j]))


def test_confusion_matrix_image_grows_to_fit_axis_labels():
  """Two classes are narrower and shorter than the axis labels: the picture widens and
  lengthens so that both labels are whole, and the grid is unchanged."""
  cm = np.array([[5, 1], [3, 1]])
  image = summaries.confusion_matrix_image(cm, ['cat', 'dog'])
  top, left, bottom, right = _grid_box(image)
  predicted, true = _text_ink('predicted class'), _text_ink('true class', rotate=True)
  assert right - left < predicted.shape[1] and bottom - top < true.shape[0]
  assert len(_find(_ink(image), predicted)) == 1 and len(_find(_ink(image), true)) == 1
  assert image.shape[1] > left + predicted.shape[1] and image.shape[0] > top + true.shape[0]
  assert _colour_present(image, summaries._heat_colour(5 / 6))
  assert _colour_present(image, summaries._heat_colour(0.75))


def test_config_hparams_flattens_scalar_settings():
  config = ml_collections.ConfigDict(dict(
      seed=3, max_steps=0, source=dict(learning_rate=1e-3, epochs=2),
      model=dict(classifier='lenet', hidden=(512, 256), extra=None, affine=False),
      pixel=dict(cycle_weight=10.0)))
  flat = summaries.config_hparams(config, sections=('source', 'model'))
  assert flat == {'seed': 3, 'max_steps': 0, 'source.learning_rate': 1e-3, 'source.epochs': 2,
                  'model.classifier': 'lenet', 'model.hidden': '(512, 256)',
                  'model.extra': 'None', 'model.affine': False}
  assert summaries.config_hparams(config)['pixel.cycle_weight'] == 10.0


def _hparams_events(event_dir):
  """({plugin tag: HParamsPluginData}, {scalar tag: (step, value)}) from one events directory."""
  plugin_data, values = {}, {}
  for name in os.listdir(event_dir):
    for event in tf.compat.v1.train.summary_iterator(os.path.join(event_dir, name)):
      for value in event.summary.value:
        if value.metadata.plugin_data.plugin_name == 'hparams':
          plugin_data[value.tag] = plugin_data_pb2.HParamsPluginData.FromString(
              value.metadata.plugin_data.content)
        elif value.metadata.plugin_data.plugin_name == 'scalars':
          values[value.tag] = (event.step, float(tf.make_ndarray(value.tensor)))
  return plugin_data, values


def test_write_hparams_reads_back(tmp_path):
  assert not summaries.write_hparams({'seed': 0}, {})  # no writer
  writer = tf.summary.create_file_writer(str(tmp_path))
  with writer.as_default():
    assert summaries.write_hparams(
        {'seed': 1, 'pair': 'uci_mnist', 'source.learning_rate': 1e-3, 'data.cache': True},
        {'target_test_accuracy': 0.5, 'steps': 22}, step=22,
        hparam_names={'pixel.cycle_weight'})
  writer.close()
  plugin_data, values = _hparams_events(str(tmp_path))
  start = plugin_data['_hparams_/session_start_info'].session_start_info
  assert start.hparams['seed'].number_value == 1
  assert start.hparams['pair'].string_value == 'uci_mnist'
  assert start.hparams['source.learning_rate'].number_value == pytest.approx(1e-3)
  assert start.hparams['data.cache'].bool_value
  assert 'pixel.cycle_weight' not in start.hparams  # declared only
  experiment = plugin_data['_hparams_/experiment'].experiment
  assert {info.name for info in experiment.hparam_infos} == {
      'seed', 'pair', 'source.learning_rate', 'data.cache', 'pixel.cycle_weight'}
  assert {info.name.tag for info in experiment.metric_infos} == {
      'target_test_accuracy', 'source_test_accuracy', 'steps'}
  assert values['target_test_accuracy'] == (22, 0.5) and values['steps'] == (22, 22.0)


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


OFFLINE_CLASSES = ['road', 'sidewalk', 'building', 'sky', 'vegetation', 'car', 'person', 'pole']


def test_segmentation_palette_is_cityscapes_for_19_classes():
  palette = summaries.segmentation_palette(19)
  assert palette.shape == (19, 3) and palette.dtype == np.uint8
  np.testing.assert_array_equal(palette[[0, 10, 13, 18]],
                                [(128, 64, 128), (70, 130, 180), (0, 0, 142), (119, 11, 32)])


def test_segmentation_palette_by_name_keeps_cityscapes_colours():
  palette = summaries.segmentation_palette(8, OFFLINE_CLASSES)
  np.testing.assert_array_equal(palette, [(128, 64, 128), (244, 35, 232), (70, 70, 70),
                                          (70, 130, 180), (107, 142, 35), (0, 0, 142),
                                          (220, 20, 60), (153, 153, 153)])
  # Spelling variants are the same class; unknown names get colours of their own.
  mixed = summaries.segmentation_palette(3, ['Traffic_Light', 'lane marking', 'motorbike'])
  np.testing.assert_array_equal(mixed[[0, 2]], [(250, 170, 30), (0, 0, 230)])
  with pytest.raises(ValueError, match='class names'):
    summaries.segmentation_palette(3, OFFLINE_CLASSES)


@pytest.mark.parametrize('num_classes', [2, 13, 40])
def test_segmentation_palette_colours_are_distinct_and_not_void(num_classes):
  palette = summaries.segmentation_palette(num_classes)
  assert palette.shape == (num_classes, 3) and palette.dtype == np.uint8
  colours = {tuple(colour) for colour in palette.tolist()}
  assert len(colours) == num_classes and (0, 0, 0) not in colours


def test_colourise_paints_classes_and_void_black():
  palette = summaries.segmentation_palette(8, OFFLINE_CLASSES)
  labels = np.array([[[0, 5], [255, 3]]])
  image = summaries.colourise(labels, palette)
  assert image.shape == (1, 2, 2, 3) and image.dtype == np.uint8
  np.testing.assert_array_equal(image[0], [[(128, 64, 128), (0, 0, 142)],
                                           [(0, 0, 0), (70, 130, 180)]])
  with pytest.raises(ValueError, match='label 8'):
    summaries.colourise([[8]], palette)


def test_segmentation_grid_rows_are_image_truth_prediction():
  images = _ramp(3, 4, 6, 3)
  labels = np.zeros((3, 4, 6), np.int64)
  labels[:, 0] = 255
  predictions = np.ones((3, 4, 6), np.int64)
  palette = summaries.segmentation_palette(8, OFFLINE_CLASSES)
  grid = summaries.segmentation_grid(images, labels, predictions, palette, max_examples=2)
  assert grid.shape == (2 * (4 + 2) + 2, 3 * (6 + 2) + 2, 3) and grid.dtype == np.uint8
  # Row 1 starts at y = 8: the image at x = 2, the ground truth at 10, the prediction at 18.
  np.testing.assert_array_equal(grid[8:12, 2:8], summaries.to_uint8_rgb(images[1]))
  np.testing.assert_array_equal(grid[8, 10:16], np.zeros((6, 3)))  # void row: black
  np.testing.assert_array_equal(grid[9:12, 10:16], np.broadcast_to(palette[0], (3, 6, 3)))
  np.testing.assert_array_equal(grid[8:12, 18:24], np.broadcast_to(palette[1], (4, 6, 3)))


def test_iou_table_markdown_has_table_4_layout():
  table = summaries.iou_table_markdown(
      [('source only', {'road': 0.26, 'sky': 0.47, 'car': None}, 0.179, 0.4194, 0.54),
       ('CyCADA pixel+feat', {'road': 0.852, 'sky': 0.6066, 'car': 0.769}, 0.354, 0.738,
        0.836)],
      ['road', 'sky', 'car'])
  assert table == '\n'.join([
      '| model | road | sky | car | mIoU | fwIoU | Pixel acc. |',
      '|---|---|---|---|---|---|---|',
      '| source only | 26.0 | 47.0 | — | 17.9 | 41.9 | 54.0 |',
      '| CyCADA pixel+feat | 85.2 | 60.7 | 76.9 | 35.4 | 73.8 | 83.6 |',
  ])
