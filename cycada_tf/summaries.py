"""Images for people: translation grids, confusion-matrix heat maps, PNG files and TensorBoard.

The pixel stage is the one place where adaptation can be checked by eye (paper §3: "visually
confirming that the conversions ... are reasonable ... can serve as a sanity check"), so the
helpers here turn model outputs in [-1, 1] into plain uint8 RGB arrays that can go both to
TensorBoard and to PNG files next to the checkpoints.
"""

import os
import uuid

import numpy as np
from PIL import Image
from PIL import ImageDraw
from PIL import ImageFont
import tensorflow as tf

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
  rows = [[to_uint8_rgb(image) for image in row] for row in rows]
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


def _heat_colour(fraction):
  """White (0) to dark blue (1): a single-hue ramp that prints and reads in greyscale too."""
  low, high = np.array([255, 255, 255]), np.array([8, 48, 107])
  return tuple(int(v) for v in np.round(low + (high - low) * fraction))


def _text_size(draw, text, font):
  left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
  return right - left, bottom - top


def confusion_matrix_image(cm, class_names, font=None):
  """A heat map of `cm` (rows = true class, columns = predicted), uint8 [H, W, 3].

  Colour is the row-normalised fraction (per-class recall on the diagonal) so rare classes are as
  visible as common ones; each cell shows the raw count. Rows are labelled with the class names,
  columns with class indices (names would not fit over narrow columns); rows without examples are
  grey. Drawn with PIL's default font, so it needs no matplotlib.
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
  image = Image.new('RGB', (label_w + k * cell + 1, header_h + k * cell + 1), 'white')
  draw = ImageDraw.Draw(image)

  totals = cm.sum(axis=1)
  for i in range(k):
    row_top = header_h + i * cell
    draw.text((4, row_top + (cell - text_h) // 2), str(class_names[i]), fill='black', font=font)
    for j in range(k):
      left = label_w + j * cell
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
    draw.text((label_w + j * cell + (cell - w) // 2, 4), str(j), fill='black', font=font)
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
