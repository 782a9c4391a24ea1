"""Input pipelines: domain images → float32 batches in [-1, 1] at the pair's image shape.

Every stage sees the same preprocessing (docs/method.md §3: the release scales pixels to
[-1, 1]), so a generator's tanh output and a real image live in the same range. Shuffling is
seeded and per-epoch, so two runs with the same seed see the same batches in the same order.
"""

import numpy as np
import tensorflow as tf

from cycada_tf.data import domains
from cycada_tf.errors import UserError

# uint8 value used to pad when the content is shrunk inside the frame: black, like MNIST.
_BACKGROUND = 0.0


def preprocess(image, image_shape, content_fraction=1.0):
  """uint8 image [H, W, C] (any size, 1 or 3 channels) → float32 [*image_shape] in [-1, 1].

  With `content_fraction` < 1 the image is resized to that fraction of the frame and padded
  with black, so UCI digits (ink to the border) sit like MNIST's 20×20 digits in 28×28.
  """
  height, width, channels = image_shape
  image = _to_channels(tf.cast(image, tf.float32), channels)
  if content_fraction < 1.0:
    inner_h = max(1, round(height * content_fraction))
    inner_w = max(1, round(width * content_fraction))
    image = _resize(image, inner_h, inner_w)
    image = _pad_centred(image, inner_h, inner_w, height, width)
  else:
    image = _resize(image, height, width)
  image = image / 127.5 - 1.0
  return tf.ensure_shape(image, [height, width, channels])


def _to_channels(image, channels):
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
                    memo=None):
  """This input pipeline's shard of one split: unbatched (float32 image, int64 label) examples.

  `memo` (a dict a stage keeps for its lifetime) makes the stage build each shard once: its
  epochs then derive their shuffled batches from the same dataset object and so share one
  in-memory `cache()`, and only the first epoch decodes and resizes. Without it, every epoch's
  new dataset would start an empty cache and preprocess the whole split again.
  """
  key = (spec, split, tuple(image_shape), data_dir, cache,
         (input_context.num_input_pipelines, input_context.input_pipeline_id)
         if input_context is not None else None)
  if memo is not None and key in memo:
    return memo[key]
  fraction = domains.domain_info(spec, data_dir).content_fraction
  dataset = domains.load_domain(spec, split, data_dir)
  if input_context is not None:
    dataset = dataset.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
  dataset = dataset.map(lambda image, label: (preprocess(image, image_shape, fraction), label),
                        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  if cache:
    dataset = dataset.cache()
  if memo is not None:
    memo[key] = dataset
  return dataset


def domain_dataset(spec, split, image_shape, *, batch_size, data_dir=None, shuffle=False, seed=0,
                   repeat=False, drop_remainder=False, input_context=None, cache=True,
                   shuffle_buffer=10000, memo=None):
  """Batches of (float32 images [B, H, W, C] in [-1, 1], int64 labels [B]) from one domain.

  With `input_context` (from `distribute`), each input pipeline reads its own shard and batches
  the per-replica share of the global `batch_size`. `memo`: see `domain_examples`.
  """
  if batch_size < 1:
    raise UserError(f'batch size {batch_size} must be at least 1. Fix: set a positive batch_size.')
  dataset = domain_examples(spec, split, image_shape, data_dir=data_dir,
                            input_context=input_context, cache=cache, memo=memo)
  if input_context is not None:
    batch_size = input_context.get_per_replica_batch_size(batch_size)
  if shuffle:
    dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
  if repeat:
    dataset = dataset.repeat()
  dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
  return dataset.prefetch(tf.data.AUTOTUNE).with_options(_deterministic_options())


def paired_dataset(source_spec, target_spec, split, image_shape, *, batch_size, data_dir=None,
                   seed=0, input_context=None, cache=True, shuffle_buffer=10000, memo=None):
  """Endless ((xs, ys), (xt, yt)) full batches; the shorter domain simply repeats sooner.

  The two domains get different shuffle seeds (derived from `seed`) so identical domains, e.g.
  in a smoke test, do not produce identical batches. `memo`: see `domain_examples`.
  """
  source_seed, target_seed = (int(s) for s in np.random.SeedSequence(seed).generate_state(2))

  def stream(spec, stream_seed):
    return domain_dataset(spec, split, image_shape, batch_size=batch_size, data_dir=data_dir,
                          shuffle=True, seed=stream_seed, repeat=True, drop_remainder=True,
                          input_context=input_context, cache=cache,
                          shuffle_buffer=shuffle_buffer, memo=memo)

  dataset = tf.data.Dataset.zip((stream(source_spec, source_seed),
                                 stream(target_spec, target_seed)))
  return dataset.prefetch(tf.data.AUTOTUNE).with_options(_deterministic_options())


def steps_per_epoch(num_examples, global_batch_size):
  """Full batches in one pass over the data, but never 0 (tiny domains still train)."""
  if global_batch_size < 1:
    raise UserError(f'batch size {global_batch_size} must be at least 1. '
                    'Fix: set a positive batch_size.')
  return max(1, num_examples // global_batch_size)


def _deterministic_options():
  options = tf.data.Options()
  options.deterministic = True
  return options
