"""Source → target pairs: the paper's digit and segmentation benchmarks, the offline pairs, and
custom ones.

A pair fixes its task family (classification or segmentation), what both domains are resized to
and which config file holds its defaults, so `--dataset=svhn_mnist` alone is a complete
experiment and `--source/--target` covers anything else. Segmentation pairs have no fixed image
shape: their networks are fully convolutional, training reads random crops of
`config.data.crop_size` and evaluation whole images (`cycada_tf.data.pipeline`).
"""

import dataclasses

from cycada_tf.data import domains
from cycada_tf.errors import UserError

_LENET_SHAPE = (28, 28, 1)
# Segmentation pairs: any height and width, colour.
SEGMENTATION_SHAPE = (None, None, 3)
CLASSIFICATION = 'classification'
SEGMENTATION = 'segmentation'


@dataclasses.dataclass(frozen=True)
class Pair:
  """One adaptation problem: labelled `source`, unlabelled `target`, shared image shape."""
  name: str
  source: str
  target: str
  image_shape: tuple  # (H, W, C) after preprocessing, for both domains; H, W None: any size.
  config: str         # Module in configs/ with this pair's defaults.
  offline: bool       # True if neither domain needs a download.
  description: str
  task: str = CLASSIFICATION  # classification (a label per image) | segmentation (per pixel)

  @property
  def is_segmentation(self):
    return self.task == SEGMENTATION


def _pair(name, source, target, image_shape, description, task=CLASSIFICATION):
  return Pair(name=name, source=source, target=target, image_shape=image_shape, config=name,
              offline=domains.is_offline(source) and domains.is_offline(target),
              description=description, task=task)


PAIRS = {
    pair.name: pair for pair in (
        _pair('svhn_mnist', 'svhn_cropped', 'mnist', (32, 32, 3),
              'SVHN -> MNIST (paper): MNIST resized to 32x32 and replicated to RGB, DTN.'),
        _pair('mnist_usps', 'mnist', 'usps', _LENET_SHAPE,
              'MNIST -> USPS (paper): USPS 16x16 resized to 28x28, LeNet.'),
        _pair('usps_mnist', 'usps', 'mnist', _LENET_SHAPE,
              'USPS -> MNIST (paper): USPS 16x16 resized to 28x28, LeNet.'),
        _pair('uci_mnist', 'uci_digits', 'mnist_sample', _LENET_SHAPE,
              'UCI digits -> MNIST sample (offline): UCI 8x8 resized to 20x20, padded to 28x28.'),
        _pair('mnist_uci', 'mnist_sample', 'uci_digits', _LENET_SHAPE,
              'MNIST sample -> UCI digits (offline): UCI 8x8 resized to 20x20, padded to 28x28.'),
        _pair('gta5_cityscapes', 'gta5', 'cityscapes', SEGMENTATION_SHAPE,
              'GTA5 -> Cityscapes (paper): 19 classes, evaluated on Cityscapes val.',
              SEGMENTATION),
        _pair('synthia_fall_winter', 'synthia_fall', 'synthia_winter', SEGMENTATION_SHAPE,
              'SYNTHIA-SEQS fall -> winter (paper): 13 classes, front views.', SEGMENTATION),
        _pair('scenes_synthetic_real', 'scenes_synthetic', 'scenes_real', SEGMENTATION_SHAPE,
              'Generated street scenes, flat colours -> textured, noisy, blurred (offline): '
              '8 classes, 64x128.', SEGMENTATION),
    )
}


def resolve_pair(dataset, source=None, target=None, image_shape=None):
  """Returns the registry entry for `dataset`, or a custom Pair from `source`/`target`.

  Exactly one of the two forms must be used; a custom pair needs `image_shape` because there
  is no config that could supply it.
  """
  if dataset and (source or target):
    raise UserError(f'both --dataset={dataset} and --source/--target were given. Fix: pass '
                    'either --dataset=NAME or --source=SPEC --target=SPEC, not both.')
  if dataset:
    if dataset not in PAIRS:
      raise UserError(f'unknown dataset {dataset!r}. Fix: use one of {", ".join(PAIRS)}, or '
                      '--source=SPEC --target=SPEC for a custom pair.')
    return PAIRS[dataset]
  if not (source and target):
    raise UserError('no data given. Fix: pass --dataset=NAME (one of '
                    f'{", ".join(PAIRS)}) or both --source=SPEC and --target=SPEC.')
  domains.validate_spec(source)
  domains.validate_spec(target)
  segmentation = [domains.is_segmentation(spec) for spec in (source, target)]
  if any(segmentation):
    if not all(segmentation):
      raise UserError(f'{source} and {target} are not both segmentation domains (or both '
                      'classification domains). Fix: pair seg_folder:PATH with another '
                      'segmentation domain.')
    return Pair(name=f'custom:{source}__{target}', source=source, target=target,
                image_shape=SEGMENTATION_SHAPE, config='segmentation',
                offline=domains.is_offline(source) and domains.is_offline(target),
                description=f'custom segmentation pair {source} -> {target}',
                task=SEGMENTATION)
  shape = check_image_shape(image_shape)
  return Pair(name=f'custom:{source}__{target}', source=source, target=target,
              image_shape=shape, config='base',
              offline=domains.is_offline(source) and domains.is_offline(target),
              description=f'custom pair {source} -> {target} at {shape}')


def custom_image_shape(source, target, image_size=None, channels=None,
                       default=_LENET_SHAPE):
  """A custom pair's (H, W, C) and a one-line note saying where it came from, or None.

  `image_size` and `channels` are what the user passed (None when not given); each wins for its
  own dimension. The rest comes from the images of the first folder domain (source before
  target): nobody should have to look up a folder's image size just to train on it. A pair of
  catalog domains keeps `default`, the config's shape. `train.main` and `train.inspect` both
  call this, so the two always agree on what the model sees.
  """
  folder = next((spec for spec in (source, target)
                 if spec.startswith(domains.FOLDER_PREFIX)), None)
  inferred = folder is not None and not (image_size and channels)
  height, width, depth = domains.folder_image_shape(folder) if inferred else default
  if image_size:
    height = width = image_size
  if channels:
    depth = channels
  shape = check_image_shape((height, width, depth))
  note = (f'image shape {shape} inferred from the train images of {folder} (override with '
          '--config.data.image_size=N --config.data.channels=1 or 3)') if inferred else None
  return shape, note


def check_image_shape(image_shape):
  """A (H, W, C) tuple of positive ints with C in {1, 3}, or UserError."""
  if image_shape is None:
    raise UserError('a custom --source/--target pair needs an image shape. Fix: pass '
                    '--image_size=N and --channels=1 or 3.')
  shape = tuple(image_shape)
  valid = (len(shape) == 3 and all(isinstance(d, int) and d > 0 for d in shape)
           and shape[2] in (1, 3))
  if not valid:
    raise UserError(f'invalid image shape {image_shape!r}. Fix: use (size, size, channels) '
                    'with a positive size and 1 or 3 channels.')
  return shape


def check_compatible(source_info, target_info):
  """Raises UserError unless both domains have the same class names in the same order.

  Labels are indices into `class_names`, so a mismatch would silently train the target model
  on the wrong classes.
  """
  if tuple(source_info.class_names) != tuple(target_info.class_names):
    raise UserError(
        f'source {source_info.spec} and target {target_info.spec} have different classes: '
        f'{list(source_info.class_names)} vs {list(target_info.class_names)}. Fix: use the '
        'same class directory names in both domains.')
