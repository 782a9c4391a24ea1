"""Digit task nets f_S / f_T (docs/method.md §3): LeNet at 28×28×1, DTN for SVHN→MNIST at 32×32×3.

Both return `(logits, features)`. The feature is the output of the first dense layer *before* its
ReLU, which is where the release splits `fc_params` from `classifier` (`TaskNet.forward` returns
`score, x` with `x = fc_params(conv_params(x))`; LeNet's `fc_params` is the bare Linear 800→500,
DTN's is Linear 4096→512 followed by BatchNorm1d). The ReLU, dropout and last dense layer form the
classifier head. The feature stage can therefore discriminate either the features or the logits
(the release feeds the 10-d logits to D_feat) without the network knowing which.

Layers are attributes (groups of them in tuples, never lists: Keras 3 wraps a list attribute in
its own `TrackedList`, which `tf.train.Checkpoint` does not see, so the layers in it would silently
be left out of checkpoints), so `tf.train.Checkpoint(classifier=net)` tracks every variable, and
nothing here depends on the batch size, so a replica of a `MirroredStrategy` can run it on its
share.

Nothing depends on the replica count either. Dropout is `GlobalBatchDropout` /
`GlobalBatchSpatialDropout2D`, whose masks are slices of one global-batch mask (see
`cycada_tf.models.layers`), and DTN's batch norm is synchronized. DTN's convolutions and dense
feature layer have no bias: each feeds a batch norm, which subtracts the per-channel batch mean
and so cancels any per-channel constant (its own `beta` is the offset). A bias there would change
nothing in the function but would receive a gradient that is exactly 0 in exact arithmetic, i.e.
pure rounding noise, which Adam normalises into steps of about ±learning_rate (the usual practice,
as in ResNets, is no bias before batch norm).
"""

import functools
import inspect

import keras
from keras import layers

from cycada_tf import errors
from cycada_tf import ops
from cycada_tf.models import registry
from cycada_tf.models.layers import GlobalBatchDropout
from cycada_tf.models.layers import GlobalBatchSpatialDropout2D
from cycada_tf.models.segmentation import DRN26
from cycada_tf.models.segmentation import FCN8s

# PyTorch's BatchNorm defaults (momentum 0.1 of the *new* statistic, eps 1e-5), as the release used.
_BN_MOMENTUM = 0.9
_BN_EPSILON = 1e-5


class LeNet(keras.Model):
  """The paper's digit LeNet (Fig. 7; release `task_net.LeNet`), for 28×28×1 images in [-1, 1].

  Conv 20@5×5 (valid) → maxpool 2 → ReLU → Conv 50@5×5 → SpatialDropout 0.5 → maxpool 2 → ReLU →
  flatten (4·4·50 = 800) → Dense 500 (feature) → ReLU → Dropout 0.5 → Dense num_classes.
  """

  INPUT_SHAPE = (28, 28, 1)
  FEATURE_DIM = 500

  def __init__(self, num_classes=10, **kwargs):
    super().__init__(**kwargs)
    self.num_classes = num_classes
    self.conv1 = layers.Conv2D(20, 5, padding='valid', name='conv1')
    self.pool1 = layers.MaxPooling2D(2, name='pool1')
    self.conv2 = layers.Conv2D(50, 5, padding='valid', name='conv2')
    self.conv2_dropout = GlobalBatchSpatialDropout2D(0.5, name='conv2_dropout')
    self.pool2 = layers.MaxPooling2D(2, name='pool2')
    self.flatten = layers.Flatten(name='flatten')
    self.fc = layers.Dense(self.FEATURE_DIM, name='fc')
    self.fc_dropout = GlobalBatchDropout(0.5, name='fc_dropout')
    self.logits = layers.Dense(num_classes, name='logits')

  def call(self, x, training=False):
    x = keras.ops.relu(self.pool1(self.conv1(x)))
    x = self.conv2_dropout(self.conv2(x), training=training)
    x = keras.ops.relu(self.pool2(x))
    features = self.fc(self.flatten(x))
    x = self.fc_dropout(keras.ops.relu(features), training=training)
    return _float32(self.logits(x)), _float32(features)


class DTN(keras.Model):
  """The release's SVHN→MNIST classifier (`task_net.DTNClassifier`), for 32×32×3 images.

  3 × [Conv 5×5 stride 2 'same' → BN → SpatialDropout p → ReLU] with 64/128/256 channels and
  p = 0.1/0.3/0.5 (32 → 16 → 8 → 4) → flatten (4096) → Dense 512 → BN (feature) → ReLU →
  Dropout 0.5 → Dense num_classes. The convolutions and the 512-wide Dense have no bias: the
  batch norm after each cancels it (see the module docstring).
  """

  INPUT_SHAPE = (32, 32, 3)
  FEATURE_DIM = 512
  _BLOCKS = ((64, 0.1), (128, 0.3), (256, 0.5))

  def __init__(self, num_classes=10, **kwargs):
    super().__init__(**kwargs)
    self.num_classes = num_classes
    self.convs = tuple(layers.Conv2D(filters, 5, strides=2, padding='same', use_bias=False,
                                     name=f'conv{i + 1}')
                       for i, (filters, _) in enumerate(self._BLOCKS))
    self.conv_norms = tuple(_batch_norm(f'conv{i + 1}_bn') for i in range(len(self._BLOCKS)))
    self.conv_dropouts = tuple(GlobalBatchSpatialDropout2D(rate, name=f'conv{i + 1}_dropout')
                               for i, (_, rate) in enumerate(self._BLOCKS))
    self.flatten = layers.Flatten(name='flatten')
    self.fc = layers.Dense(self.FEATURE_DIM, use_bias=False, name='fc')
    self.fc_norm = _batch_norm('fc_bn')
    self.fc_dropout = GlobalBatchDropout(0.5, name='fc_dropout')
    self.logits = layers.Dense(num_classes, name='logits')

  def call(self, x, training=False):
    for conv, norm, dropout in zip(self.convs, self.conv_norms, self.conv_dropouts):
      x = keras.ops.relu(dropout(norm(conv(x), training=training), training=training))
    features = self.fc_norm(self.fc(self.flatten(x)), training=training)
    x = self.fc_dropout(keras.ops.relu(features), training=training)
    return _float32(self.logits(x)), _float32(features)


class OnlineSemanticClassifier(keras.Model):
  """The release's pixel-stage classifier (`networks.Classifier`), trained online on real source.

  The release does not use f_S for the semantic loss: it trains this small net from scratch
  alongside the translators (`pixel.semantic_classifier=online`, stages/pixel.py). Conv
  `filters`@3×3 stride 2 (valid) → LeakyReLU 0.2, then 3 × [Conv 3×3 stride 2 (valid) with
  filters·1, ·2, ·4 → batch norm → LeakyReLU 0.2], flatten, Dense 1024 → Dense num_classes (no
  activation between the two dense layers, as released). Weights N(0, 0.02), biases 0, batch-norm
  scales N(1, 0.02) (the release's `init_weights`). Written for 32×32 images, where the last map
  is 1×1; it needs at least `MIN_SIZE` pixels a side. The convolutions before a batch norm have no
  bias (see the module docstring); the norm is synchronized, so the replica count changes nothing.
  """

  MIN_SIZE = 31  # four valid 3×3 stride-2 convolutions leave at least a 1×1 map

  def __init__(self, num_classes=10, filters=64, **kwargs):
    super().__init__(**kwargs)
    self.num_classes = num_classes
    # A new initializer per layer: one shared instance would give every layer the same draws
    # (`generators.kernel_initializer`).
    init = functools.partial(keras.initializers.RandomNormal, 0.0, 0.02)
    self.conv0 = layers.Conv2D(filters, 3, strides=2, padding='valid', kernel_initializer=init(),
                               name='conv0')
    self.convs = tuple(layers.Conv2D(filters * mult, 3, strides=2, padding='valid',
                                     use_bias=False, kernel_initializer=init(), name=f'conv{i + 1}')
                       for i, mult in enumerate((1, 2, 4)))
    self.norms = tuple(layers.BatchNormalization(
        momentum=_BN_MOMENTUM, epsilon=_BN_EPSILON, synchronized=True,
        gamma_initializer=keras.initializers.RandomNormal(1.0, 0.02), name=f'conv{i + 1}_bn')
                       for i in range(3))
    self.flatten = layers.Flatten(name='flatten')
    self.fc = layers.Dense(1024, kernel_initializer=init(), name='fc')
    self.logits = layers.Dense(num_classes, kernel_initializer=init(), name='logits')

  def call(self, x, training=False):
    # `ops.leaky_relu`: with TF's own gradient Grappler's remapper fails on conv0 + LeakyRelu.
    x = ops.leaky_relu(self.conv0(x), 0.2)
    for conv, norm in zip(self.convs, self.norms):
      x = ops.leaky_relu(norm(conv(x), training=training), 0.2)
    features = self.fc(self.flatten(x))
    return _float32(self.logits(features)), _float32(features)


def _float32(x):
  """Outputs leave the network in float32 whatever the dtype policy (see `cycada_tf.precision`):
  under `mixed_bfloat16` the layers compute in bfloat16, but losses and metrics must not."""
  return keras.ops.cast(x, 'float32')


def _batch_norm(name):
  # Synchronized: batch statistics are all-reduced over every replica (and worker), so they are
  # the global batch's, as on one device, and training does not depend on the replica count.
  # Without a strategy it is ordinary batch norm.
  return layers.BatchNormalization(momentum=_BN_MOMENTUM, epsilon=_BN_EPSILON,
                                   synchronized=True, name=name)


DIGIT_CLASSIFIERS = {'lenet': LeNet, 'dtn': DTN}
# Per-pixel task nets (`cycada_tf.models.segmentation`), same (logits, features) interface.
SEGMENTATION_CLASSIFIERS = {'fcn8s': FCN8s, 'drn26': DRN26}
CLASSIFIERS = {**DIGIT_CLASSIFIERS, **SEGMENTATION_CLASSIFIERS}


def build_classifier(name, num_classes=10, **options):
  """The task network called `name` in configs, variables not yet created.

  Args:
    name: 'lenet' | 'dtn' (digits) or 'fcn8s' | 'drn26' (segmentation).
    num_classes: number of classes.
    **options: that network's own constructor options, e.g. `backbone_weights` and
      `fc_channels` for fcn8s, `width` for drn26 (the digit nets have none).

  Raises:
    errors.UserError: for an unknown name, listing the valid ones per family, or an option the
      network does not take.
  """
  if name not in CLASSIFIERS:
    # Per family, so a digit config's error lists the digit nets together.
    raise errors.UserError(
        f'unknown classifier {name!r}; choose one of {sorted(DIGIT_CLASSIFIERS)} (digits) or '
        f'{sorted(SEGMENTATION_CLASSIFIERS)} (segmentation) (config.model.classifier)')
  network = registry.lookup(CLASSIFIERS, name, 'classifier', 'config.model.classifier')
  valid = [p for p in inspect.signature(network.__init__).parameters
           if p not in ('self', 'num_classes', 'kwargs')]
  unknown = sorted(set(options) - set(valid))
  if unknown:
    raise errors.UserError(f'classifier {name!r} takes no option {", ".join(unknown)}; '
                           f'its options: {valid or "none"}')
  return network(num_classes=num_classes, name=name, **options)
