"""Segmentation task nets f_S / f_T (docs/method.md §4): VGG16-FCN8s and DRN-C-26.

Both have the digit nets' interface (`cycada_tf.models.classifiers`): `net(images, training=...)`
returns `(logits, features)`, both float32 whatever the dtype policy. `logits` are per-pixel class
scores [B, H, W, num_classes] at the input's own H × W, for any H and W; `features` is the map the
last 1×1 score convolution reads (FCN8s: fc7, DRN: its last level). The feature stage can
discriminate either, as for digits (the release feeds D_feat the score maps).

Output size, for inputs of any size (odd ones included). The release pads FCN8s' input by 100 (99
in `cycada_release`) pixels and crops the upsampled maps at Caffe's offsets 5, 9 and 31, which
only line up for that padding. Here nothing is padded and the sizes are kept aligned instead:

- FCN8s pools in ceil mode (as the release's `make_layers`, `MaxPool2d(ceil_mode=True)`; here
  'same' max pooling), so pool k has ceil(H / 2^k) rows and its row i covers input rows
  [2^k·i, 2^k·(i + 1)). Every upsampling is then by an exact integer factor (×2, ×2, ×8) with
  half-pixel-centred bilinear interpolation, which puts each coarse row's centre exactly on the
  finer grid, followed by a crop of the (at most factor − 1) surplus rows at the bottom / right.
  The release's upsampling layers are fixed bilinear kernels too (no learned deconvolutions),
  so nothing trainable is lost. fc6 is a 'same'-padded 7×7 conv on pool5 rather than a valid one
  on the padded input.
- DRN26 ends at output stride 8 and upsamples its score map bilinearly to H × W with
  `align_corners=True`, exactly as the release's `DRN.forward` (`out_map=True`).

The upsampling and the skip sums run in float32 on the num_classes-channel score maps (cheap,
and the outputs are float32 anyway); the layers before them compute in the policy's dtype.

Conventions shared with `classifiers.py`: layers are attributes or tuples of them (never lists,
which `tf.train.Checkpoint` does not see inside Keras 3's wrappers); batch norm is synchronized,
with PyTorch's momentum and epsilon, so statistics are the global batch's under any strategy;
dropout is `GlobalBatchDropout` / `GlobalBatchSpatialDropout2D`, whose masks do not depend on the
replica count; a convolution feeding a batch norm has no bias (the norm cancels it). Nothing
depends on the batch size, and every variable exists after one call on a dummy batch.
"""

import os

import keras
from keras import layers
import tensorflow as tf

from cycada_tf.errors import UserError
from cycada_tf.models.layers import GlobalBatchDropout
from cycada_tf.models.layers import GlobalBatchSpatialDropout2D

# PyTorch's BatchNorm defaults, as the release used (the same constants as classifiers.py).
_BN_MOMENTUM = 0.9
_BN_EPSILON = 1e-5

# `keras.applications.vgg16.preprocess_input` ('caffe' mode): BGR channel means on 0..255 values.
VGG16_BGR_MEAN = (103.939, 116.779, 123.68)

BACKBONE_WEIGHTS_KEY = '--config.model.backbone_weights'


class FCN8s(keras.Model):
  """VGG16-FCN8s (Long et al.; the release's `VGG16_FCN8s`), for RGB images in [-1, 1].

  VGG16's 13 convolutions (from `keras.applications.VGG16(include_top=False)`) with ceil-mode
  pools → fc6 (7×7 conv, ReLU, dropout 0.5) → fc7 (1×1 conv, ReLU, dropout 0.5) = `features` →
  score_fr (1×1 conv) at stride 32, then the FCN-8s skips: ×2 + score_pool4 (1×1 conv on
  0.01·pool4), ×2 + score_pool3 (1×1 conv on 0.0001·pool3), ×8 to the input size (see the module
  docstring for the alignment). The scaled, zero-initialised pool4 / pool3 scores are the
  "at-once" FCN-8s the release trains: the skips start at exactly 0 and, scaled down, learn at
  a rate comparable to score_fr's instead of swamping it at the start of training.

  fc6 and fc7 always start from Keras' default (Glorot) initialisation: the include_top=False
  weights have no fully connected layers (the release reshapes ImageNet's fc1 / fc2 into them).

  Args:
    num_classes: number of score channels.
    backbone_weights: 'imagenet' (Keras' download or its cache), 'random' (explicit random
      initialisation) or the path of a `keras.applications.VGG16(include_top=False)` weights file
      (.weights.h5, or Keras' legacy .h5). With trained weights (anything but 'random') `call`
      converts the [-1, 1] RGB input into what they were trained on (`preprocess`).
    fc_channels: width of fc6 and fc7; 4096 is FCN8s. Smaller values only for tests and
      CPU-sized configs (fc6 alone holds 103M of FCN8s' 134M parameters).
    spatial_dropout: False (the default): fc6 / fc7 dropout drops single units, as Caffe's
      FCN-8s; True: whole channels (`GlobalBatchSpatialDropout2D`), as the release's
      `nn.Dropout2d`. At 1×1 maps the two are the same.

  Raises:
    UserError: when the backbone weights cannot be loaded (see `vgg16_backbone`).
  """

  BLOCKS = (2, 2, 3, 3, 3)      # VGG16 convolutions per pooling level.
  POOL4_SCALE = 0.01
  POOL3_SCALE = 0.0001

  def __init__(self, num_classes=19, backbone_weights='imagenet', fc_channels=4096,
               spatial_dropout=False, **kwargs):
    super().__init__(**kwargs)
    self.num_classes = num_classes
    self.backbone_weights = backbone_weights
    self.caffe_preprocessing = backbone_weights != 'random'
    vgg = vgg16_backbone(backbone_weights)
    self.backbone = tuple(layer for layer in vgg.layers if isinstance(layer, layers.Conv2D))
    # Ceil mode: see the module docstring. Pools have no weights, so replacing Keras' (floor
    # mode) ones changes no loaded value.
    self.pools = tuple(layers.MaxPooling2D(2, padding='same', name=f'block{i + 1}_pool')
                       for i in range(len(self.BLOCKS)))
    dropout = GlobalBatchSpatialDropout2D if spatial_dropout else GlobalBatchDropout
    self.fc6 = layers.Conv2D(fc_channels, 7, padding='same', activation='relu', name='fc6')
    self.fc6_dropout = dropout(0.5, name='fc6_dropout')
    self.fc7 = layers.Conv2D(fc_channels, 1, activation='relu', name='fc7')
    self.fc7_dropout = dropout(0.5, name='fc7_dropout')
    self.score_fr = layers.Conv2D(num_classes, 1, name='score_fr')
    self.score_pool4 = layers.Conv2D(num_classes, 1, kernel_initializer='zeros',
                                     name='score_pool4')
    self.score_pool3 = layers.Conv2D(num_classes, 1, kernel_initializer='zeros',
                                     name='score_pool3')

  def build(self, input_shape):
    # Nothing to create here: every sublayer builds itself on the first call. Defining `build`
    # only skips Keras' symbolic pre-run of `call`, which costs seconds for these deep nets.
    del input_shape

  def preprocess(self, images):
    """[-1, 1] RGB → the backbone's input: caffe-style BGR minus ImageNet means on 0..255
    (`keras.applications.vgg16.preprocess_input`) for trained weights, unchanged for 'random'."""
    if not self.caffe_preprocessing:
      return images
    pixels = (images + 1.0) * 127.5
    return keras.ops.flip(pixels, axis=-1) - keras.ops.cast(VGG16_BGR_MEAN, pixels.dtype)

  def call(self, x, training=False):
    size = _spatial_size(x)
    x = self.preprocess(x)
    pooled = []
    convs = iter(self.backbone)
    for num_convs, pool in zip(self.BLOCKS, self.pools):
      for _ in range(num_convs):
        x = next(convs)(x)
      x = pool(x)
      pooled.append(x)
    pool3, pool4 = pooled[2], pooled[3]
    x = self.fc6_dropout(self.fc6(x), training=training)
    features = self.fc7_dropout(self.fc7(x), training=training)
    scores = _float32(self.score_fr(features))
    score_pool4 = _float32(self.score_pool4(pool4 * self.POOL4_SCALE))
    scores = upsample(scores, 2, _spatial_size(pool4)) + score_pool4
    score_pool3 = _float32(self.score_pool3(pool3 * self.POOL3_SCALE))
    scores = upsample(scores, 2, _spatial_size(pool3)) + score_pool3
    return upsample(scores, 8, size), _float32(features)


def vgg16_backbone(weights):
  """`keras.applications.VGG16(include_top=False)` for any input size, with `weights`.

  Args:
    weights: 'imagenet', 'random' or the path of a weights file of that network.

  Raises:
    UserError: one line, when 'imagenet' cannot be loaded (offline, say: never a silent random
      fallback), when the path does not exist, or when the file does not load.
  """
  def vgg16(keras_weights):
    return keras.applications.VGG16(include_top=False, weights=keras_weights,
                                    input_shape=(None, None, 3))

  fix = (f'pass {BACKBONE_WEIGHTS_KEY}=random (explicit random initialisation) or the path of a '
         f'local keras.applications.VGG16(include_top=False) weights file')
  if weights == 'random':
    return vgg16(None)
  if weights == 'imagenet':
    try:
      return vgg16('imagenet')
    except Exception as error:  # Offline, proxy, corrupt cache: all mean the same to the user.
      raise UserError(f'the ImageNet VGG16 weights could not be loaded ({_one_line(error)}); '
                      f'{fix}.') from error
  if not isinstance(weights, (str, os.PathLike)):
    raise UserError(f'{BACKBONE_WEIGHTS_KEY}={weights!r}: expected imagenet, random or a path.')
  path = os.path.expanduser(os.fspath(weights))
  if not os.path.isfile(path):
    raise UserError(f'{BACKBONE_WEIGHTS_KEY}={weights!r}: no such weights file; {fix}.')
  try:
    return vgg16(path)
  except Exception as error:
    raise UserError(f'{BACKBONE_WEIGHTS_KEY}={weights!r}: the file did not load as '
                    f'keras.applications.VGG16(include_top=False) weights '
                    f'({_one_line(error)}).') from error


class DRN26(keras.Model):
  """DRN-C-26 (Yu et al., "Dilated Residual Networks"; the release's `drn26`), output stride 8.

  conv1 7×7 (stride 1) → BN → ReLU, then eight levels of `BasicBlock`s, blocks
  [1, 1, 2, 2, 2, 2, 1, 1] with (16, 32, 64, 128, 256, 512, 512, 512) channels: levels 2-4 stride
  2; levels 5 and 6 keep the resolution and dilate by 2 and 4 instead; levels 7 and 8 are plain
  (non-residual) blocks with dilation 2 and 1, which remove the gridding artefacts of the
  dilations. The last level's map is `features`; a 1×1 conv with bias gives the scores, and
  bilinear upsampling (align_corners, as the release) brings them to the input size.

  Initialisation as the release: convs N(0, 2 / (k·k·out_channels)) (He, fan-out), batch norm
  γ = 1, β = 0; the score conv's bias 0.

  Args:
    num_classes: number of score channels.
    width: channel multiplier (channels rounded, at least 4); 1.0 is the paper's network. It
      exists so that a CPU-sized config can shrink the network.
  """

  BLOCKS = (1, 1, 2, 2, 2, 2, 1, 1)
  CHANNELS = (16, 32, 64, 128, 256, 512, 512, 512)
  # (stride, dilation, residual) of each level.
  LEVELS = ((1, 1, True), (2, 1, True), (2, 1, True), (2, 1, True),
            (1, 2, True), (1, 4, True), (1, 2, False), (1, 1, False))
  OUTPUT_STRIDE = 8

  def __init__(self, num_classes=19, width=1.0, **kwargs):
    super().__init__(**kwargs)
    self.num_classes = num_classes
    self.width = float(width)
    self.channels = tuple(scaled_channels(c, self.width) for c in self.CHANNELS)
    self.stem = layers.Conv2D(self.channels[0], 7, padding='same', use_bias=False,
                              kernel_initializer=_he_fan_out(), name='conv1')
    self.stem_norm = _batch_norm('bn1')
    blocks = []
    in_channels = self.channels[0]
    for level, (count, filters, (stride, dilation, residual)) in enumerate(
        zip(self.BLOCKS, self.channels, self.LEVELS)):
      for i in range(count):
        blocks.append(BasicBlock(filters, in_channels, stride=stride if i == 0 else 1,
                                 dilation=dilation, residual=residual,
                                 name=f'layer{level + 1}_{i}'))
        in_channels = filters
    self.blocks = tuple(blocks)  # A tuple so that tf.train.Checkpoint tracks the blocks.
    self.scores = layers.Conv2D(num_classes, 1, kernel_initializer=_he_fan_out(), name='fc')

  def build(self, input_shape):
    # Nothing to create here: every sublayer builds itself on the first call. Defining `build`
    # only skips Keras' symbolic pre-run of `call`, which costs seconds for these deep nets.
    del input_shape

  def call(self, x, training=False):
    size = _spatial_size(x)
    x = keras.ops.relu(self.stem_norm(self.stem(x), training=training))
    for block in self.blocks:
      x = block(x, training=training)
    scores = _float32(self.scores(x))
    # The release's `F.upsample(..., align_corners=True)`; tf.image.resize has no such mode.
    logits = tf.raw_ops.ResizeBilinear(images=scores, size=tf.stack(size), align_corners=True)
    return logits, _float32(x)


class BasicBlock(layers.Layer):
  """ResNet's basic block as DRN uses it: two 3×3 convs with BN, optionally residual.

  conv(stride, dilation) → BN → ReLU → conv(dilation) → BN [+ shortcut] → ReLU. The shortcut is
  the identity, or a 1×1 conv (with the stride) + BN when the shape changes. Padding is the
  release's symmetric `padding=dilation`: 'same' at stride 1, explicit at stride 2, where TF's
  'same' would pad only the bottom / right of even inputs and shift the main path one pixel
  against the shortcut's 1×1 stride-2 samples.
  """

  def __init__(self, filters, in_channels, stride=1, dilation=1, residual=True, **kwargs):
    super().__init__(**kwargs)
    self.stride = stride
    self.dilation = dilation
    self.residual = residual
    self.conv1 = layers.Conv2D(filters, 3, strides=stride, dilation_rate=dilation,
                               padding='same' if stride == 1 else 'valid', use_bias=False,
                               kernel_initializer=_he_fan_out(), name='conv1')
    self.bn1 = _batch_norm('bn1')
    self.conv2 = layers.Conv2D(filters, 3, dilation_rate=dilation, padding='same',
                               use_bias=False, kernel_initializer=_he_fan_out(), name='conv2')
    self.bn2 = _batch_norm('bn2')
    self.downsample = None
    self.downsample_norm = None
    if residual and (stride != 1 or in_channels != filters):
      # A 1x1 conv at stride 1 on every `stride`-th pixel: the same function and weights as a
      # 1x1 conv at stride `stride`, whose oneDNN gradient crashes the process (heap
      # corruption) for few input channels (4 or 8, DRN26 at width 0.25 and 0.5) in TF 2.21.
      self.downsample = layers.Conv2D(filters, 1, use_bias=False,
                                      kernel_initializer=_he_fan_out(), name='downsample')
      self.downsample_norm = _batch_norm('downsample_bn')

  def build(self, input_shape):
    # Nothing to create here: every sublayer builds itself on the first call. Defining `build`
    # only skips Keras' symbolic pre-run of `call`, which costs seconds for these deep nets.
    del input_shape

  def call(self, x, training=False):
    out = x
    if self.stride != 1:
      pad = self.dilation
      out = keras.ops.pad(out, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    out = keras.ops.relu(self.bn1(self.conv1(out), training=training))
    out = self.bn2(self.conv2(out), training=training)
    if self.residual:
      shortcut = x
      if self.downsample is not None:
        strided = x[:, ::self.stride, ::self.stride] if self.stride != 1 else x
        shortcut = self.downsample_norm(self.downsample(strided), training=training)
      out = out + shortcut
    return keras.ops.relu(out)


def scaled_channels(channels, width):
  """`channels` × `width`, rounded, at least 4 (DRN26's `width`)."""
  return max(4, int(round(channels * width)))


def upsample(x, factor, size):
  """Bilinear ×`factor` (half-pixel centres, edges clamped), cropped to `size` = (rows, cols).

  With ceil-mode pooling the coarse map has ceil(rows / factor) rows, so the upsampled map is at
  most factor − 1 rows too large, all at the bottom / right, and its grid is exactly the fine
  one's (see the module docstring).
  """
  rows, cols = _spatial_size(x)
  x = tf.image.resize(x, (rows * factor, cols * factor), method='bilinear')
  return x[:, :size[0], :size[1], :]


def _spatial_size(x):
  """(rows, cols) of an NHWC tensor: Python ints where static, scalar tensors where not."""
  dynamic = tf.shape(x)
  return tuple(x.shape[i] if x.shape[i] is not None else dynamic[i] for i in (1, 2))


def _float32(x):
  """Outputs leave the network in float32 whatever the dtype policy (see `cycada_tf.precision`)."""
  return keras.ops.cast(x, 'float32')


def _batch_norm(name):
  # Synchronized: statistics of the global batch under any strategy (see classifiers.py).
  return layers.BatchNormalization(momentum=_BN_MOMENTUM, epsilon=_BN_EPSILON,
                                   synchronized=True, name=name)


def _he_fan_out():
  # The release's DRN init: N(0, sqrt(2 / n)), n = k·k·out_channels. A new object per layer.
  return keras.initializers.VarianceScaling(2.0, mode='fan_out', distribution='untruncated_normal')


def _one_line(error):
  """An exception as one short line (its type and the first line of its message)."""
  lines = str(error).strip().splitlines()
  text = f'{type(error).__name__}: {lines[0]}' if lines else type(error).__name__
  return text if len(text) <= 200 else text[:197] + '...'
