"""Discriminators (docs/method.md §3): D_feat on task-net outputs, D_S / D_T on images.

Every discriminator returns raw scores (no sigmoid / softmax): the losses in `cycada_tf.losses`
decide whether they are read as LSGAN scores or as logits.

In the image discriminators a convolution followed by instance norm has no bias (the norm removes
each channel's mean, so a bias would change nothing and only collect rounding noise as its
gradient); the first convolution and the score convolution, with no norm after them, keep theirs.
D_feat's optional dropout is `GlobalBatchDropout` (`cycada_tf.models.layers`: masks independent
of the replica count); the segmentation D_feat's is its channel-wise variant,
`GlobalBatchSpatialDropout2D` (see `ScoreMapFeatureDiscriminator`).
"""

import keras
from keras import layers

from cycada_tf import ops
from cycada_tf.errors import check_choice
from cycada_tf.models import registry
from cycada_tf.models.generators import FastBackwardConv2D
from cycada_tf.models.generators import instance_norm
from cycada_tf.models.generators import kernel_initializer
from cycada_tf.models.layers import GlobalBatchDropout
from cycada_tf.models.layers import GlobalBatchSpatialDropout2D

_LEAK = 0.2


class LeakyReLU(layers.Layer):
  """`keras.layers.LeakyReLU` with a gradient that lets Grappler fuse conv + bias + activation.

  Same function and gradient as Keras' layer; see `ops.leaky_relu` for why the gradient reads
  the output (with TF's own, the training step's whole remapper pass failed).
  """

  def __init__(self, negative_slope=0.3, **kwargs):
    super().__init__(**kwargs)
    self.negative_slope = float(negative_slope)

  def call(self, x):
    return ops.leaky_relu(x, self.negative_slope)

  def compute_output_shape(self, input_shape):
    return input_shape

  def get_config(self):
    return {**super().get_config(), 'negative_slope': self.negative_slope}


class FeatureDiscriminator(keras.Model):
  """D_feat: Dense 500 → ReLU → Dense 500 → ReLU → Dense 2 (paper Fig. 7, release).

  Output 1 is "source", output 0 "target" (see `losses.feature_discriminator_loss`). Keras Dense
  acts on the last axis, so the same network applied to [B, H, W, C] score maps is a stack of 1×1
  convolutions, which is what the segmentation variant (docs/method.md §4: 19 → 512 → 256 → 2
  with dropout 0.5) needs: pass `hidden=(512, 256), dropout=0.5`.
  """

  def __init__(self, hidden=500, num_outputs=2, dropout=0.0, **kwargs):
    super().__init__(**kwargs)
    widths = (hidden, hidden) if isinstance(hidden, int) else tuple(hidden)
    # Tuples, not lists: tf.train.Checkpoint does not see layers in Keras 3's list wrappers.
    self.hidden_layers = tuple(layers.Dense(width, name=f'fc{i + 1}')
                               for i, width in enumerate(widths))
    self.dropouts = tuple(GlobalBatchDropout(dropout) if dropout > 0 else None for _ in widths)
    self.scores = layers.Dense(num_outputs, name='scores')

  def call(self, x, training=False):
    for dense, dropout in zip(self.hidden_layers, self.dropouts):
      x = keras.ops.relu(dense(x))
      if dropout is not None:
        x = dropout(x, training=training)
    return keras.ops.cast(self.scores(x), 'float32')  # float32 losses (precision.py)


class ScoreMapFeatureDiscriminator(keras.Model):
  """The segmentation D_feat (docs/method.md §4; the release's `fcn8s.Discriminator`) on score maps.

  1×1 convs num_classes → 512 → 256 → 2 with ReLU and dropout 0.5 after each hidden one: raw
  logits [B, h, w, 2] float32, one source / target decision per position (output 1 is "source",
  as `FeatureDiscriminator`), which `losses.feature_discriminator_loss` and
  `losses.discriminator_accuracy` average over positions.

  Dropout is `GlobalBatchSpatialDropout2D`, which drops whole channels of each map: the release
  uses `nn.Dropout2d` on its [B, C, H, W] maps, which does exactly that (elementwise dropout
  would instead draw a mask per position). It also draws one random number per channel and
  image instead of one per pixel, which on full-resolution score maps is most of a dropout's
  cost. Dropout before or after the ReLU is the same function (the mask and its positive scale
  commute with it); it is applied after, as in `FeatureDiscriminator`.

  Args:
    hidden: widths of the hidden 1×1 convs.
    num_outputs: score channels (2: target, source).
    dropout: rate after each hidden layer; 0 for none.
  """

  def __init__(self, hidden=(512, 256), num_outputs=2, dropout=0.5, **kwargs):
    super().__init__(**kwargs)
    widths = (hidden,) if isinstance(hidden, int) else tuple(hidden)
    # Tuples, not lists: tf.train.Checkpoint does not see layers in Keras 3's list wrappers.
    self.hidden_layers = tuple(layers.Conv2D(width, 1, activation='relu', name=f'conv{i + 1}')
                               for i, width in enumerate(widths))
    self.dropouts = tuple(GlobalBatchSpatialDropout2D(dropout, name=f'dropout{i + 1}')
                          if dropout > 0 else None for i in range(len(widths)))
    self.scores = layers.Conv2D(num_outputs, 1, name='scores')

  def call(self, x, training=False):
    for conv, dropout in zip(self.hidden_layers, self.dropouts):
      x = conv(x)
      if dropout is not None:
        x = dropout(x, training=training)
    return keras.ops.cast(self.scores(x), 'float32')  # float32 losses (precision.py)


PADDINGS = ('pad1', 'same')


def _conv(filters, kernel, strides, padding, init, use_bias=True, name=None):
  """One conv, zero-padded as `padding` says: `pad1` is the release's `padw=1` on every side
  (CycleGAN's NLayerDiscriminator), `same` is TF's (asymmetric at stride 2)."""
  check_choice('--config.model.discriminator_padding', padding, PADDINGS)
  conv = FastBackwardConv2D(filters, kernel, strides=strides,
                            padding='valid' if padding == 'pad1' else 'same',
                            use_bias=use_bias, kernel_initializer=kernel_initializer(init),
                            name=name)
  return (layers.ZeroPadding2D(1), conv) if padding == 'pad1' else (conv,)


def _conv_stack(specs, kernel, padding, init, affine_norm):
  """Conv → [instance norm] → LeakyReLU 0.2 stages from (filters, strides, normalise) specs.

  A conv followed by instance norm has no bias (the norm cancels it).
  """
  stack = []
  for filters, strides, normalise in specs:
    stack.extend(_conv(filters, kernel, strides, padding, init, use_bias=not normalise))
    if normalise:
      stack.append(instance_norm(affine_norm))
    stack.append(LeakyReLU(negative_slope=_LEAK))
  return tuple(stack)  # A tuple so that tf.train.Checkpoint tracks the layers.


class _ScoreMapDiscriminator(keras.Model):
  """A conv stack followed by a 1-channel conv: one real/fake score per spatial position."""

  def __init__(self, specs, kernel, padding, init='normal', affine_norm=False, **kwargs):
    super().__init__(**kwargs)
    self.stack = _conv_stack(specs, kernel, padding, init, affine_norm)
    *self.score_padding, self.score = _conv(1, kernel, 1, padding, init, name='score')
    self.score_padding = tuple(self.score_padding)

  def call(self, x, training=False):
    for layer in self.stack + self.score_padding:
      x = layer(x)
    return keras.ops.cast(self.score(x), 'float32')  # float32 losses (precision.py)


class PatchGAN(_ScoreMapDiscriminator):
  """The release's image discriminator (CycleGAN's `NLayerDiscriminator`, 3 layers).

  k4 convs C64 s2 → C128 s2 → C256 s2 → C512 s1 → C1 s1, instance norm on all but the first
  and last, LeakyReLU 0.2. With the release's 1-pixel padding (`pad1`) score maps are 1×1 at
  28×28 and 2×2 at 32×32; with `same`, 4×4 at both.
  """

  def __init__(self, filters=64, padding='pad1', **kwargs):
    specs = ((filters, 2, False), (2 * filters, 2, True), (4 * filters, 2, True),
             (8 * filters, 1, True))
    super().__init__(specs, kernel=4, padding=padding, **kwargs)


class ConvDiscriminator(_ScoreMapDiscriminator):
  """The paper's digit image discriminator: 6 convolutions ending in one value per position.

  Fig. 7 gives only "6 conv layers, a single value per pixel", so this design is ours: k3 'same'
  convs C64 s1 → C64 s2 → C128 s1 → C128 s2 → C256 s1 → C1 s1, LeakyReLU 0.2, instance norm on all
  but the first and last (as PatchGAN). Two stride-2 steps give a 7×7 map for 28×28 digits and 8×8
  for 32×32, so each score judges a stroke-sized patch rather than the whole digit.
  """

  def __init__(self, filters=64, padding='same', **kwargs):
    specs = ((filters, 1, False), (filters, 2, True), (2 * filters, 1, True),
             (2 * filters, 2, True), (4 * filters, 1, True))
    super().__init__(specs, kernel=3, padding=padding, **kwargs)


IMAGE_DISCRIMINATORS = {'patchgan': PatchGAN, 'conv6': ConvDiscriminator}


def build_image_discriminator(name, filters=64, padding='pad1', init='normal', affine_norm=False):
  """The image discriminator called `name` in configs ('patchgan' | 'conv6').

  `padding` applies to PatchGAN (the paper's 6-conv net keeps 'same'); `init` and `affine_norm`
  default to the release's CycleGAN (N(0, 0.02), instance norm without scale and offset).

  Raises:
    errors.UserError: for an unknown name, listing the valid ones.
  """
  network = registry.lookup(IMAGE_DISCRIMINATORS, name, 'image discriminator',
                            'config.model.image_discriminator')
  kwargs = {'padding': padding} if network is PatchGAN else {}
  return network(filters=filters, init=init, affine_norm=affine_norm, **kwargs)


def build_feature_discriminator(hidden=500, num_outputs=2, dropout=0.0):
  """D_feat with the digit defaults (500 → 500 → 2); its input width is set by the first call."""
  return FeatureDiscriminator(hidden=hidden, num_outputs=num_outputs, dropout=dropout,
                              name='feature_discriminator')


def build_score_map_discriminator(hidden=(512, 256), num_outputs=2, dropout=0.5):
  """The segmentation D_feat (1×1 convs → 512 → 256 → 2, dropout 0.5); its input channels are
  set by the first call on [B, h, w, num_classes] score maps."""
  return ScoreMapFeatureDiscriminator(hidden=hidden, num_outputs=num_outputs, dropout=dropout,
                                      name='feature_discriminator')
