"""Images for people: translation grids, confusion-matrix heat maps, PNG files and TensorBoard.

The pixel stage is the one place where adaptation can be checked by eye (paper §3: "visually
confirming that the conversions ... are reasonable ... can serve as a sanity check"), so the
helpers here turn model outputs in [-1, 1] into plain uint8 RGB arrays that can go both to
TensorBoard and to PNG files next to the checkpoints. A run's settings and final metrics go to
TensorBoard's HParams dashboard (`write_hparams`), so runs and seeds can be compared side by side.
For segmentation, label maps become colour pictures (`segmentation_palette`, `colourise`,
`segmentation_grid`) and per-class IoUs the paper's Table 4 (`iou_table_markdown`).
"""

import os
import uuid

import numpy as np
from PIL import Image
from PIL import ImageDraw
from PIL import ImageFont
import tensorflow as tf
from tensorboard.plugins.hparams import api as hp

PADDING = 2
PAD_VALUE = 255  # White separators: digits are light on dark, so cells stay distinguishable.


def to_uint8_rgb(image):
  """One image in [-1, 1], [H, W], [H, W, 1] or [H, W, 3], as uint8 [H, W, 3]."""
  image = np.asarray(image, dtype=np.float32)
  if image.ndim == 2:
    image = image[..., None]
  if image.ndim != 3 or image.shape[-1] not in (1, 3):
    raise ValueError(f'expected an [H, W, 1|3] image, got shape {image.shape}')
  if image.shape[-1] == 1:
    image = np.repeat(image, 3, axis=-1)
  return np.round((np.clip(image, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)


def image_grid(rows, padding=PADDING):
  """Lays out rows of images side by side: uint8 [H_total, W_total, 3].

  `rows` is a list whose items are each an [N, H, W, C] array (or any sequence of [H, W, C]
  images) in [-1, 1]; greyscale is expanded to RGB, so one row may mix 1- and 3-channel images
  (MNIST next to its SVHN-style translation). Every cell is max-H × max-W with the image at its
  top-left, and `padding` pixels of white surround every cell; rows shorter than the longest
  leave blank cells.
  """
  return _layout([[to_uint8_rgb(image) for image in row] for row in rows], padding)


def _layout(rows, padding=PADDING):
  """`image_grid` of cells that already are uint8 [H, W, 3] (colourised label maps, say)."""
  images = [image for row in rows for image in row]
  if not images:
    raise ValueError('image_grid needs at least one image')
  cell_h = max(image.shape[0] for image in images)
  cell_w = max(image.shape[1] for image in images)
  columns = max(len(row) for row in rows)
  grid = np.full((len(rows) * (cell_h + padding) + padding,
                  columns * (cell_w + padding) + padding, 3), PAD_VALUE, dtype=np.uint8)
  for r, row in enumerate(rows):
    for c, image in enumerate(row):
      top, left = padding + r * (cell_h + padding), padding + c * (cell_w + padding)
      grid[top:top + image.shape[0], left:left + image.shape[1]] = image
  return grid


def translation_grid(originals, translated, reconstructed, max_examples=8):
  """One row per example: original | G(original) | F(G(original)), for the first `max_examples`."""
  n = min(len(originals), len(translated), len(reconstructed), max_examples)
  return image_grid([(originals[i], translated[i], reconstructed[i]) for i in range(n)])


# Cityscapes' own colours (cityscapesScripts labels.py) for its 19 training classes, in trainId
# order, so pictures look like every other Cityscapes figure.
CITYSCAPES_CLASSES = (
    ('road', (128, 64, 128)), ('sidewalk', (244, 35, 232)), ('building', (70, 70, 70)),
    ('wall', (102, 102, 156)), ('fence', (190, 153, 153)), ('pole', (153, 153, 153)),
    ('traffic light', (250, 170, 30)), ('traffic sign', (220, 220, 0)),
    ('vegetation', (107, 142, 35)), ('terrain', (152, 251, 152)), ('sky', (70, 130, 180)),
    ('person', (220, 20, 60)), ('rider', (255, 0, 0)), ('car', (0, 0, 142)),
    ('truck', (0, 0, 70)), ('bus', (0, 60, 100)), ('train', (0, 80, 100)),
    ('motorcycle', (0, 0, 230)), ('bicycle', (119, 11, 32)),
)
_CITYSCAPES_COLOURS = dict(CITYSCAPES_CLASSES)
_CITYSCAPES_COLOURS['motorbike'] = _CITYSCAPES_COLOURS['motorcycle']  # the paper's Table 4 name
IGNORE_LABEL = 255
IGNORE_COLOUR = (0, 0, 0)  # void pixels are black, as in Cityscapes' colour images


def _canonical_name(name):
  """'Traffic_Light' and 'traffic-light' are Cityscapes' 'traffic light'."""
  return ' '.join(str(name).lower().replace('_', ' ').replace('-', ' ').split())


def _separated_colours():
  """PASCAL VOC's colour map from index 1 on: bit-interleaved, so neighbouring indices differ
  in every channel's high bits. Index 0 is black, which is the void colour here."""
  for index in range(1, 1 << 24):
    r = g = b = 0
    value = index
    for shift in range(7, -1, -1):
      r |= (value & 1) << shift
      g |= ((value >> 1) & 1) << shift
      b |= ((value >> 2) & 1) << shift
      value >>= 3
    yield r, g, b


def segmentation_palette(num_classes, class_names=None):
  """uint8 [num_classes, 3]: one colour per class, for `colourise`.

  Classes are coloured by name where Cityscapes has the name (so a class keeps its colour in
  any subset, e.g. an 8-class road/sidewalk/building/... pair), else — or with no names — 19
  classes get the Cityscapes palette in trainId order. Every other class gets the next colour
  of `_separated_colours` that is neither black (void) nor already used, so no two classes
  share a colour.

  Raises:
    ValueError: if `class_names` is given and does not have one name per class.
  """
  if class_names is not None and len(class_names) != num_classes:
    raise ValueError(f'{num_classes} classes but {len(class_names)} class names')
  if class_names is None and num_classes == len(CITYSCAPES_CLASSES):
    class_names = [name for name, _ in CITYSCAPES_CLASSES]
  names = [_canonical_name(name) for name in class_names or [None] * num_classes]
  colours = [_CITYSCAPES_COLOURS.get(name) for name in names]
  used = {colour for colour in colours if colour is not None} | {IGNORE_COLOUR}
  spare = (colour for colour in _separated_colours() if colour not in used)
  return np.array([colour or next(spare) for colour in colours], dtype=np.uint8).reshape(-1, 3)


def colourise(label_map, palette):
  """int label map [..., H, W] → uint8 [..., H, W, 3] in `palette`'s colours; 255 is black.

  Raises:
    ValueError: for a label that is neither a class of the palette nor 255, which would
      otherwise silently borrow some other class's colour.
  """
  label_map = np.asarray(label_map).astype(np.int64)
  palette = np.asarray(palette, dtype=np.uint8)
  if palette.shape[0] > IGNORE_LABEL:
    raise ValueError(f'a palette of {palette.shape[0]} classes overlaps the void label 255')
  lookup = np.zeros((IGNORE_LABEL + 1, 3), np.uint8)
  lookup[:palette.shape[0]] = palette
  lookup[IGNORE_LABEL] = IGNORE_COLOUR
  bad = ((label_map < 0) | (label_map >= palette.shape[0])) & (label_map != IGNORE_LABEL)
  if bad.any():
    raise ValueError(f'label {label_map[bad][0]} is outside [0, {palette.shape[0]}) and not '
                     f'{IGNORE_LABEL}')
  return lookup[label_map]


def segmentation_grid(images, labels, predictions, palette, max_examples=4):
  """One row per example: image | ground truth | prediction, uint8 [H', W', 3].

  `images` are the pipeline's floats in [-1, 1] ([N, H, W, C]), `labels` and `predictions`
  int class maps [N, H, W] (255 in the labels is void, drawn black). Laid out like
  `translation_grid`, so the two kinds of picture read the same way.
  """
  n = min(len(images), len(labels), len(predictions), max_examples)
  return _layout([(to_uint8_rgb(images[i]), colourise(labels[i], palette),
                   colourise(predictions[i], palette)) for i in range(n)])


MISSING = '—'  # the paper's mark for a number that does not exist


def _percent(fraction):
  return MISSING if fraction is None else f'{100.0 * fraction:.1f}'


def iou_table_markdown(rows, class_names):
  """The paper's Table 4 layout as Markdown: a row per model, a column per class, then mIoU,
  fwIoU and pixel accuracy, all in % with one decimal.

  `rows` is a list of (model name, {class name: IoU fraction or None}, mIoU, fwIoU, pixel
  accuracy), i.e. what `metrics.segmentation_metrics` reports; a class a model has no IoU for
  (absent, or missing from its dict) shows '—', as the paper marks numbers it does not have.
  """
  header = ['model', *map(str, class_names), 'mIoU', 'fwIoU', 'Pixel acc.']
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  for name, ious, miou, fwiou, pixel_accuracy in rows:
    cells = [str(name)] + [_percent(ious.get(c)) for c in class_names]
    cells += [_percent(miou), _percent(fwiou), _percent(pixel_accuracy)]
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def _heat_colour(fraction):
  """White (0) to dark blue (1): a single-hue ramp that prints and reads in greyscale too."""
  low, high = np.array([255, 255, 255]), np.array([8, 48, 107])
  return tuple(int(v) for v in np.round(low + (high - low) * fraction))


def _text_size(draw, text, font):
  left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
  return right - left, bottom - top


ROWS_AXIS_LABEL = 'true class'
COLUMNS_AXIS_LABEL = 'predicted class'


def _rotated_text(text, font):
  """`text` in black on white, turned 90° anticlockwise (read bottom to top), as a PIL image.

  PIL cannot draw rotated text, so it is drawn level on its own image, cropped to its ink's
  bounding box, and the image is rotated.
  """
  left, top, right, bottom = ImageDraw.Draw(Image.new('RGB', (1, 1))).textbbox((0, 0), text,
                                                                              font=font)
  level = Image.new('RGB', (right - left, bottom - top), 'white')
  ImageDraw.Draw(level).text((-left, -top), text, fill='black', font=font)
  return level.rotate(90, expand=True)


def confusion_matrix_image(cm, class_names, font=None):
  """A heat map of `cm` (rows = true class, columns = predicted), uint8 [H, W, 3].

  Colour is the row-normalised fraction (per-class recall on the diagonal) so rare classes are as
  visible as common ones; each cell shows the raw count. Rows are labelled with the class names,
  columns with class indices (names would not fit over narrow columns); rows without examples are
  grey. The axes say which is which ("true class" up the left, "predicted class" along the
  top), since row/column conventions differ between tools. Drawn with PIL's default font, so it
  needs no matplotlib.
  """
  cm = np.asarray(cm, dtype=np.int64)
  k = cm.shape[0]
  if cm.shape != (k, k) or len(class_names) != k:
    raise ValueError(f'need a square matrix and one name per class; got {cm.shape}, '
                     f'{len(class_names)} names')
  font = font or ImageFont.load_default()
  measure = ImageDraw.Draw(Image.new('RGB', (1, 1)))
  counts = [str(int(v)) for v in cm.ravel()]
  text_w = max(_text_size(measure, t, font)[0] for t in counts + [str(k - 1)])
  text_h = max(_text_size(measure, t, font)[1] for t in counts + list(class_names) + ['0'])
  cell = max(text_w, text_h) + 8
  label_w = max(_text_size(measure, str(name), font)[0] for name in class_names) + 8
  header_h = text_h + 8
  rows_label = _rotated_text(ROWS_AXIS_LABEL, font)
  columns_w, columns_h = _text_size(measure, COLUMNS_AXIS_LABEL, font)
  # The grid starts right of the rotated row-axis label and the row names, and below the
  # column-axis label and the column indices; axis labels longer than the grid widen the image.
  grid_left, grid_top = rows_label.width + 8 + label_w, columns_h + 8 + header_h
  grid = k * cell
  image = Image.new('RGB', (grid_left + max(grid, columns_w + 4) + 1,
                            grid_top + max(grid, rows_label.height + 4) + 1), 'white')
  draw = ImageDraw.Draw(image)
  draw.text((grid_left + max(grid - columns_w, 0) // 2, 4), COLUMNS_AXIS_LABEL, fill='black',
            font=font)
  image.paste(rows_label, (4, grid_top + max(grid - rows_label.height, 0) // 2))

  totals = cm.sum(axis=1)
  for i in range(k):
    row_top = grid_top + i * cell
    draw.text((grid_left - label_w + 4, row_top + (cell - text_h) // 2), str(class_names[i]),
              fill='black', font=font)
    for j in range(k):
      left = grid_left + j * cell
      if totals[i]:
        fraction = cm[i, j] / totals[i]
        fill, ink = _heat_colour(fraction), ('white' if fraction > 0.5 else 'black')
      else:
        fill, ink = (200, 200, 200), 'black'
      draw.rectangle([left, row_top, left + cell, row_top + cell], fill=fill, outline='grey')
      text = str(int(cm[i, j]))
      w, _ = _text_size(draw, text, font)
      draw.text((left + (cell - w) // 2, row_top + (cell - text_h) // 2), text, fill=ink,
                font=font)
  for j in range(k):
    w, _ = _text_size(draw, str(j), font)
    draw.text((grid_left + j * cell + (cell - w) // 2, grid_top - header_h + 4), str(j),
              fill='black', font=font)
  return np.asarray(image, dtype=np.uint8)


def save_png(array, path):
  """Writes a uint8 [H, W], [H, W, 1] or [H, W, 3] array as PNG, atomically.

  The file is written under a temporary name in the same directory and renamed into place, so a
  reader (or a crash) never sees half a PNG. Parent directories are created.
  """
  array = np.asarray(array)
  if array.dtype != np.uint8:
    raise ValueError(f'save_png needs uint8 pixels, got {array.dtype}')
  if array.ndim == 3 and array.shape[-1] == 1:
    array = array[..., 0]
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  # Not `tempfile.mkstemp`: its files are always mode 0600, and the rename would keep that, so
  # a TensorBoard or web server running as another user could not read the PNG. Created like
  # every other output (0666 minus the umask), under a name no other writer uses.
  tmp_path = os.path.join(directory, f'.tmp-{uuid.uuid4().hex}.png')
  fd = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
  try:
    with os.fdopen(fd, 'wb') as f:
      Image.fromarray(array).save(f, format='PNG')
    os.replace(tmp_path, path)
  except BaseException:
    if os.path.exists(tmp_path):
      os.remove(tmp_path)
    raise
  return path


def write_image(name, array, step):
  """Logs one uint8 [H, W, C] image to the default summary writer (the caller's `as_default()`).

  Returns what `tf.summary.image` returns: False when no writer is active.
  """
  return tf.summary.image(name, np.asarray(array)[None], step=step)


# HParams metrics every classifier stage reports: declared by every stage, so that whichever
# stage's declaration TensorBoard shows (see `write_hparams`), these columns are in it.
COMMON_METRICS = ('source_test_accuracy', 'target_test_accuracy')
_HPARAM_TYPES = (bool, int, float, str)


def config_hparams(config, sections=None):
  """A config's scalar settings as flat HParams: {'seed': 0, 'source.learning_rate': 1e-3, ...}.

  `config` is an ml_collections ConfigDict (or a nested dict). Top-level scalars are always
  kept; of the nested sections only `sections`, or all when None. HParams values are bool,
  number or string, so anything else (None, a tuple) becomes its `str` — still comparable.
  """
  tree = config.to_dict() if hasattr(config, 'to_dict') else dict(config)
  flat = {}

  def add(prefix, value):
    if isinstance(value, dict):
      for key, item in value.items():
        add(f'{prefix}.{key}', item)
      return
    if isinstance(value, np.generic):
      value = value.item()
    flat[prefix] = value if isinstance(value, _HPARAM_TYPES) else str(value)

  for key, value in tree.items():
    if not isinstance(value, dict) or sections is None or key in sections:
      add(key, value)
  return flat


def write_hparams(hparams, metrics, step=0, hparam_names=()):
  """Logs one run's settings and final metrics for the HParams dashboard to the default writer.

  The writer's directory is the run (a stage's `<model_dir>/<stage>/`, whose `train/` holds
  the trainer's scalars). `hparams` maps names to bool/number/string values; `metrics` maps
  names to numbers, each written as a scalar of that name at `step` and declared as an HParams
  metric. TensorBoard shows the dashboard's columns from the first declaration it finds in the
  logdir, for every run in it, so callers declare every setting any of their runs may have in
  `hparam_names` (runs without one show a blank), and `COMMON_METRICS` are always declared.
  Returns False when no writer is active.
  """
  names = sorted(set(hparams) | set(hparam_names))
  metric_names = sorted(set(metrics) | set(COMMON_METRICS))
  written = hp.hparams_config(hparams=[hp.HParam(name) for name in names],
                              metrics=[hp.Metric(name) for name in metric_names])
  hp.hparams(hparams)
  for name, value in sorted(metrics.items()):
    tf.summary.scalar(name, float(value), step=step,
                      description='final value, as in metrics.json (HParams metric)')
  return bool(written)
