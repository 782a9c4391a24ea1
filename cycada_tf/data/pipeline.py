"""Input pipelines: domain images → float32 batches in [-1, 1] at the pair's image shape.

Every stage sees the same preprocessing (docs/method.md §3: the release scales pixels to
[-1, 1]), so a generator's tanh output and a real image live in the same range. Shuffling is
seeded and per-epoch, so two runs with the same seed see the same batches in the same order.

Segmentation domains (labels are uint8 maps, 255 ignored) go through the same functions. Their
images are first resized to `resize_width` (aspect kept, sides rounded to a multiple of 8),
labels with nearest-neighbour so no class is ever interpolated. Training batches (`crops=True`)
are random crops of `image_shape`'s height and width with a random horizontal flip, applied
identically to image and label and drawn from stateless seeds of (epoch seed, example index):
the crops do not depend on threading, replica count or resumes. Evaluation batches are whole
resized images with their labels at full resolution (the metrics' resolution, docs/method.md §4).
"""

import numpy as np
import tensorflow as tf

from cycada_tf.data import domains
from cycada_tf.errors import check_positive

# uint8 value used to pad when the content is shrunk inside the frame: black, like MNIST.
_BACKGROUND = 0.0


def preprocess(image, image_shape, content_fraction=1.0):
  """uint8 image [H, W, C] (any size, 1 or 3 channels) → float32 [*image_shape] in [-1, 1].

  With `content_fraction` < 1 the image is resized to that fraction of the frame and padded
  with black, so UCI digits (ink to the border) sit like MNIST's 20×20 digits in 28×28.
  """
  height, width, channels = image_shape
  image = to_channels(tf.cast(image, tf.float32), channels)
  if content_fraction < 1.0:
    inner_h = max(1, round(height * content_fraction))
    inner_w = max(1, round(width * content_fraction))
    image = _resize(image, inner_h, inner_w)
    image = _pad_centred(image, inner_h, inner_w, height, width)
  else:
    image = _resize(image, height, width)
  image = image / 127.5 - 1.0
  return tf.ensure_shape(image, [height, width, channels])


def to_channels(image, channels):
  """Grey ↔ RGB; RGBA drops alpha. Works on float images."""
  if image.shape[-1] == 4:
    image = image[..., :3]
  have = image.shape[-1]
  if have == channels:
    return image
  if have == 1 and channels == 3:
    return tf.image.grayscale_to_rgb(image)
  if have == 3 and channels == 1:
    return tf.image.rgb_to_grayscale(image)
  raise ValueError(f'cannot convert {have} channels to {channels}')


def _resize(image, height, width):
  image = tf.image.resize(image, [height, width], method='bilinear', antialias=True)
  return tf.clip_by_value(image, 0.0, 255.0)


def _pad_centred(image, inner_h, inner_w, height, width):
  top, left = (height - inner_h) // 2, (width - inner_w) // 2
  paddings = [[top, height - inner_h - top], [left, width - inner_w - left], [0, 0]]
  return tf.pad(image, paddings, constant_values=_BACKGROUND)


def domain_examples(spec, split, image_shape, *, data_dir=None, input_context=None, cache=True,
                    memo=None, resize_width=0, crops=False):
  """This input pipeline's shard of one split: unbatched (float32 image, int64 label) examples.

  Segmentation domains give (uint8 image, uint8 label map) instead, resized to `resize_width`;
  with `crops` (training) the label is resized with the image, else it keeps its full
  resolution. Crops, flips and scaling come later, per epoch (`domain_dataset`).

  `memo` (a dict a stage keeps for its lifetime) makes the stage build each shard once: its
  epochs then derive their shuffled batches from the same dataset object and so share one
  in-memory `cache()`, and only the first epoch decodes and resizes. Without it, every epoch's
  new dataset would start an empty cache and preprocess the whole split again.
  """
  info = domains.domain_info(spec, data_dir)
  segmentation = info.task == 'segmentation'
  key = (spec, split, tuple(image_shape), data_dir, cache,
         (input_context.num_input_pipelines, input_context.input_pipeline_id)
         if input_context is not None else None)
  if segmentation:
    key += (int(resize_width), bool(crops))
  if memo is not None and key in memo:
    return memo[key]
  dataset = domains.load_domain(spec, split, data_dir)
  if input_context is not None:
    dataset = dataset.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
  if segmentation:
    resize = lambda image, label: resize_segmentation(image, label, resize_width,
                                                      resize_label=crops)
    dataset = dataset.map(resize, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  else:
    fraction = info.content_fraction
    dataset = dataset.map(lambda image, label: (preprocess(image, image_shape, fraction), label),
                          num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  if cache:
    dataset = dataset.cache()
  if memo is not None:
    memo[key] = dataset
  return dataset


def domain_dataset(spec, split, image_shape, *, batch_size, data_dir=None, shuffle=False, seed=0,
                   repeat=False, drop_remainder=False, input_context=None, cache=True,
                   shuffle_buffer=10000, memo=None, resize_width=0, crops=None, flip=True):
  """Batches of (float32 images [B, H, W, C] in [-1, 1], int64 labels [B]) from one domain.

  Segmentation domains: uint8 label maps [B, H, W]. With `crops` (default: `shuffle`, i.e.
  training) each example is a random `image_shape` crop, flipped at random if `flip`; without,
  whole images at `resize_width` with full-resolution labels (a batch of several needs images
  of one size).

  With `input_context` (from `distribute`), each input pipeline reads its own shard and batches
  the per-replica share of the global `batch_size`. `memo`: see `domain_examples`.
  """
  check_positive('batch_size', batch_size, fix='set a positive batch_size.')
  crops = shuffle if crops is None else crops
  segmentation = domains.domain_info(spec, data_dir).task == 'segmentation'
  dataset = domain_examples(spec, split, image_shape, data_dir=data_dir,
                            input_context=input_context, cache=cache, memo=memo,
                            resize_width=resize_width, crops=crops)
  if input_context is not None:
    batch_size = input_context.get_per_replica_batch_size(batch_size)
  if shuffle:
    dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
  if repeat:
    dataset = dataset.repeat()
  if segmentation:
    if crops:
      # The epoch's seed, this pipeline and the example's position in the stream pick its crop
      # and flip: fixed given the seed, however the stream is resumed (`skip`) or parallelised.
      pipeline_id = input_context.input_pipeline_id if input_context is not None else 0
      stream_seed = tf.constant(int(seed) * 1_009 + int(pipeline_id), tf.int64)
      crop_size = tuple(int(d) for d in image_shape[:2])
      augment = lambda position, example: random_crop_and_flip(
          *example, crop_size, tf.stack([stream_seed, position]), flip)
      dataset = dataset.enumerate().map(augment, num_parallel_calls=tf.data.AUTOTUNE,
                                        deterministic=True)
    dataset = dataset.map(lambda image, label: (scale(image), label),
                          num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
  return dataset.prefetch(tf.data.AUTOTUNE).with_options(_deterministic_options())


def paired_dataset(source_spec, target_spec, split, image_shape, *, batch_size, data_dir=None,
                   seed=0, input_context=None, cache=True, shuffle_buffer=10000, memo=None,
                   resize_width=0, flip=True):
  """Endless ((xs, ys), (xt, yt)) full batches; the shorter domain simply repeats sooner.

  The two domains get different shuffle seeds (derived from `seed`) so identical domains, e.g.
  in a smoke test, do not produce identical batches. `memo`: see `domain_examples`.
  """
  source_seed, target_seed = (int(s) for s in np.random.SeedSequence(seed).generate_state(2))

  def stream(spec, stream_seed):
    return domain_dataset(spec, split, image_shape, batch_size=batch_size, data_dir=data_dir,
                          shuffle=True, seed=stream_seed, repeat=True, drop_remainder=True,
                          input_context=input_context, cache=cache,
                          shuffle_buffer=shuffle_buffer, memo=memo, resize_width=resize_width,
                          flip=flip)

  dataset = tf.data.Dataset.zip((stream(source_spec, source_seed),
                                 stream(target_spec, target_seed)))
  return dataset.prefetch(tf.data.AUTOTUNE).with_options(_deterministic_options())


def scale(image):
  """uint8 → float32 in [-1, 1], the scaling of every image the networks see."""
  return tf.cast(image, tf.float32) / 127.5 - 1.0


def resized_size(height, width, resize_width):
  """(height, width) after resizing to `resize_width` (0: unchanged), as int32 tensors.

  The height keeps the aspect ratio; both sides are rounded to a multiple of 8, the networks'
  output stride and a multiple of the generators' 4, so a whole resized image goes through
  every network without padding.
  """
  height, width = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
  if not resize_width:
    return tf.cast(height, tf.int32), tf.cast(width, tf.int32)
  new_width = float(resize_width)
  new_height = height * new_width / width
  multiple = lambda x: tf.cast(tf.maximum(8.0, tf.round(x / 8.0) * 8.0), tf.int32)
  return multiple(new_height), multiple(tf.constant(new_width))


def resize_segmentation(image, label, resize_width, resize_label=True):
  """(uint8 image [H, W, 3], uint8 label [H, W]) resized to `resize_width` (see `resized_size`).

  The image bilinearly (antialiased when shrinking), rounded back to uint8 so a cached split
  costs a byte per channel; the label, when `resize_label`, with nearest-neighbour: a label is a
  class id and an interpolated id would be another class. Otherwise the label keeps its full
  resolution, which is where the metrics are computed.
  """
  image = to_channels(tf.cast(image, tf.float32), 3)
  label = tf.cast(label, tf.uint8)
  if resize_width:
    size = resized_size(tf.shape(image)[0], tf.shape(image)[1], resize_width)
    image = _resize(image, size[0], size[1])
    if resize_label:
      label = tf.image.resize(label[..., None], size, method='nearest')[..., 0]
  image = tf.cast(tf.round(image), tf.uint8)
  return tf.ensure_shape(image, [None, None, 3]), tf.ensure_shape(label, [None, None])


def random_crop_and_flip(image, label, crop_size, seed, flip=True, ignore_label=255):
  """The same random (crop_h, crop_w) window of image and label, flipped left-right with p 1/2.

  `seed` is a stateless seed [2]: equal seeds give equal crops on any machine. An image smaller
  than the crop is padded first, black for the image and `ignore_label` for the label, so padding
  never counts as a class.
  """
  crop_h, crop_w = crop_size
  height, width = tf.shape(image)[0], tf.shape(image)[1]
  pad_h, pad_w = tf.maximum(crop_h - height, 0), tf.maximum(crop_w - width, 0)
  image = tf.pad(image, [[0, pad_h], [0, pad_w], [0, 0]])
  label = tf.pad(label, [[0, pad_h], [0, pad_w]], constant_values=ignore_label)
  height, width = height + pad_h, width + pad_w
  draws = tf.random.stateless_uniform([3], seed=seed)
  top = tf.cast(draws[0] * tf.cast(height - crop_h + 1, tf.float32), tf.int32)
  left = tf.cast(draws[1] * tf.cast(width - crop_w + 1, tf.float32), tf.int32)
  top, left = tf.minimum(top, height - crop_h), tf.minimum(left, width - crop_w)
  image = image[top:top + crop_h, left:left + crop_w]
  label = label[top:top + crop_h, left:left + crop_w]
  if flip:
    flipped = draws[2] < 0.5
    image = tf.cond(flipped, lambda: image[:, ::-1], lambda: image)
    label = tf.cond(flipped, lambda: label[:, ::-1], lambda: label)
  return tf.ensure_shape(image, [crop_h, crop_w, 3]), tf.ensure_shape(label, [crop_h, crop_w])


def steps_per_epoch(num_examples, global_batch_size):
  """Full batches in one pass over the data, but never 0 (tiny domains still train)."""
  check_positive('batch_size', global_batch_size, fix='set a positive batch_size.')
  return max(1, num_examples // global_batch_size)


def _deterministic_options():
  options = tf.data.Options()
  options.deterministic = True
  return options
