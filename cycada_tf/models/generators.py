"""Generators G_ST / G_TS (docs/method.md §3): the paper's small digit net and CycleGAN's ResNet-9.

Both are fully convolutional encoder / residual / decoder nets with two stride-2 downsamples and two
stride-2 transposed convolutions, so they map H×W to H×W whenever H and W are multiples of 4
(28×28 digits and 32×32 SVHN both are). They end in tanh because every image in this project is
scaled to [-1, 1].

Normalisation is instance norm as in CycleGAN (`InstanceNormalization`: the function of
`GroupNormalization(groups=-1)`, in fused kernels on the `cpu_tuned` kernel path, see
cycada_tf/kernels.py): it is per image, so results do not depend on how a global batch is split
across replicas. Every convolution that feeds an instance norm has no bias: the norm subtracts
each image's per-channel mean, which cancels any per-channel constant, so such a bias would
leave the function unchanged and only receive a gradient that is exactly 0 in exact arithmetic,
i.e. rounding noise that Adam turns into steps of about ±learning_rate. Only the last
convolution (no norm after it) has one. The optional dropout in the residual blocks is
`GlobalBatchDropout`, whose masks do not depend on the replica count (see
`cycada_tf.models.layers`). Groups of layers are tuples, not lists, so that
`tf.train.Checkpoint` tracks them (see `classifiers`).
"""

import keras
from keras import layers
import tensorflow as tf

from cycada_tf import errors
from cycada_tf import kernels
from cycada_tf import ops
from cycada_tf.models import registry
from cycada_tf.models.layers import GlobalBatchDropout

# PyTorch InstanceNorm2d's epsilon; Keras' default (1e-3) would smooth low-contrast digit maps.
_NORM_EPSILON = 1e-5

INITIALIZERS = ('normal', 'glorot')


def kernel_initializer(name):
  """The pixel-stage networks' weight initialiser: `normal` is CycleGAN's and the release's
  N(0, 0.02) (`init_weights(net, 'normal', gain=0.02)`); `glorot` is Keras' default.

  Call it once per layer, never share the result: a Keras 3 initializer draws its seed when it is
  created and then returns the same stream on every call, so two layers given one instance start
  from the same numbers (equal kernels for equal shapes, a shared prefix otherwise), where the
  release draws each layer independently.
  """
  errors.check_choice('--config.model.gan_init', name, INITIALIZERS)
  return keras.initializers.RandomNormal(0.0, 0.02) if name == 'normal' else 'glorot_uniform'


def instance_norm(affine=False, name=None):
  """Instance normalisation (per image, per channel); with `affine`, a learned scale and offset.

  The release (CycleGAN's `InstanceNorm2d(affine=False)`) has no scale or offset. It removes each
  channel's mean, so the convolution in front of it should have `use_bias=False`.
  """
  return InstanceNormalization(epsilon=_NORM_EPSILON, affine=affine, name=name)


@keras.saving.register_keras_serializable(package='cycada_tf')
class InstanceNormalization(layers.Layer):
  """Per-image, per-channel normalisation; with `affine`, a learned scale `gamma` and offset `beta`.

  The function of `keras.layers.GroupNormalization(groups=-1, center=affine, scale=affine)`,
  with the same variable names (so checkpoints of either load into the other). On the
  `cpu_tuned` kernel path (`config.train.kernels`, see cycada_tf/kernels.py) it is computed by
  `ops.instance_norm`'s fused kernels, on `stock` from `tf.nn.moments`.
  """

  def __init__(self, epsilon=1e-3, affine=True, **kwargs):
    super().__init__(**kwargs)
    self.epsilon = float(epsilon)
    self.affine = bool(affine)

  def build(self, input_shape):
    channels = input_shape[-1]
    self.channels = channels
    if self.affine:
      self.gamma = self.add_weight(shape=(channels,), initializer='ones', name='gamma')
      self.beta = self.add_weight(shape=(channels,), initializer='zeros', name='beta')

  def call(self, x):
    gamma = self.gamma if self.affine else tf.ones([self.channels])
    beta = self.beta if self.affine else tf.zeros([self.channels])
    if kernels.cpu_tuned():
      return ops.instance_norm(x, gamma, beta, self.epsilon)
    # Stock: the moments over H and W, in float32 whatever the compute dtype.
    x32 = tf.cast(x, tf.float32)
    mean, variance = tf.nn.moments(x32, axes=[1, 2], keepdims=True)
    y = (x32 - mean) * tf.math.rsqrt(variance + self.epsilon) * tf.cast(gamma, tf.float32)
    return tf.cast(y + tf.cast(beta, tf.float32), x.dtype)

  def compute_output_shape(self, input_shape):
    return input_shape

  def get_config(self):
    return {**super().get_config(), 'epsilon': self.epsilon, 'affine': self.affine}


class ReflectionPad2D(layers.Layer):
  """Pads height and width by mirroring, as CycleGAN does before its 7×7 and residual convs.

  Zero padding would show the generator a dark frame that does not exist in the data; reflecting
  avoids border artefacts in translated images.
  """

  def __init__(self, padding, **kwargs):
    super().__init__(**kwargs)
    self.padding = int(padding)

  def call(self, x):
    if kernels.cpu_tuned():
      # Same values as MirrorPad, with a gradient that is fast on CPU (see `cycada_tf.ops`).
      return ops.reflect_pad_2d(x, self.padding)
    p = self.padding
    return tf.pad(x, [[0, 0], [p, p], [p, p], [0, 0]], mode='REFLECT')

  def compute_output_shape(self, input_shape):
    b, h, w, c = input_shape
    grow = lambda size: None if size is None else size + 2 * self.padding
    return (b, grow(h), grow(w), c)

  def get_config(self):
    return {**super().get_config(), 'padding': self.padding}


def _undilated_channels_last(conv):
  """Whether a Keras conv layer uses only what `ops.conv2d` / `ops.conv2d_transpose` implement."""
  return tuple(conv.dilation_rate) == (1, 1) and conv.data_format == 'channels_last'


@keras.saving.register_keras_serializable(package='cycada_tf')
class FastBackwardConv2D(layers.Conv2D):
  """A channels-last, undilated `Conv2D` computed by `ops.conv2d` on the `cpu_tuned` kernel path
  (`cycada_tf.kernels`): in bfloat16, a faster filter gradient on small maps (PatchGAN's
  convolutions, the generators' residual and second downsampling convolutions) where
  `kernels.swaps_filter_gradient()` (not on AMX CPUs by default). On `stock` it
  is `layers.Conv2D`. Same variables and results as `layers.Conv2D`."""

  def __init__(self, filters, kernel_size, **kwargs):
    super().__init__(filters, kernel_size, **kwargs)
    if not _undilated_channels_last(self):
      raise ValueError(f'{type(self).__name__} is an undilated, channels-last convolution; got '
                       f'dilation_rate={self.dilation_rate}, data_format={self.data_format!r}')

  def convolution_op(self, inputs, kernel):
    if not kernels.cpu_tuned():
      return super().convolution_op(inputs, kernel)
    return ops.conv2d(inputs, kernel, tuple(self.strides), self.padding.upper())


@keras.saving.register_keras_serializable(package='cycada_tf')
class FastBackwardConv2DTranspose(layers.Conv2DTranspose):
  """A channels-last, undilated `Conv2DTranspose` without `output_padding`, computed by
  `ops.conv2d_transpose` on the `cpu_tuned` kernel path (`cycada_tf.kernels`): in bfloat16, a
  faster filter gradient on small maps (the decoder's first stage) where
  `kernels.swaps_filter_gradient()` (not on AMX CPUs by default). On `stock` it is
  `layers.Conv2DTranspose`. Same variables and results as `layers.Conv2DTranspose`."""

  def __init__(self, filters, kernel_size, **kwargs):
    super().__init__(filters, kernel_size, **kwargs)
    if not _undilated_channels_last(self) or self.output_padding is not None:
      raise ValueError(f'{type(self).__name__} is an undilated, channels-last transposed '
                       f'convolution without output_padding; got dilation_rate='
                       f'{self.dilation_rate}, data_format={self.data_format!r}, '
                       f'output_padding={self.output_padding}')

  def call(self, inputs):
    if not kernels.cpu_tuned():
      return super().call(inputs)
    outputs = ops.conv2d_transpose(inputs, self.kernel, tuple(self.strides), self.padding.upper())
    if self.use_bias:
      outputs = outputs + keras.ops.cast(self.bias, outputs.dtype)
    return outputs if self.activation is None else self.activation(outputs)


@keras.saving.register_keras_serializable(package='cycada_tf')
class ValidConv2D(FastBackwardConv2D):
  """The residual blocks' `FastBackwardConv2D`: stride 1, 'valid' (they reflection-pad first)."""

  def __init__(self, filters, kernel_size, padding='valid', **kwargs):
    super().__init__(filters, kernel_size, padding=padding, **kwargs)
    if self.padding != 'valid' or tuple(self.strides) != (1, 1):
      raise ValueError(
          f'ValidConv2D is a stride-1 "valid" convolution; got padding={self.padding!r}, '
          f'strides={self.strides}')


class ResidualBlock(layers.Layer):
  """x + [pad → conv3 → IN → ReLU → (dropout) → pad → conv3 → IN](x), CycleGAN's `ResnetBlock`."""

  def __init__(self, filters, dropout=0.0, init='normal', affine_norm=False, **kwargs):
    super().__init__(**kwargs)
    self.pad1 = ReflectionPad2D(1)
    self.conv1 = ValidConv2D(filters, 3, use_bias=False,
                             kernel_initializer=kernel_initializer(init))
    self.norm1 = instance_norm(affine_norm)
    self.dropout = GlobalBatchDropout(dropout) if dropout > 0 else None
    self.pad2 = ReflectionPad2D(1)
    self.conv2 = ValidConv2D(filters, 3, use_bias=False,
                             kernel_initializer=kernel_initializer(init))
    self.norm2 = instance_norm(affine_norm)

  def call(self, x, training=False):
    y = keras.ops.relu(self.norm1(self.conv1(self.pad1(x))))
    if self.dropout is not None:
      y = self.dropout(y, training=training)
    return x + self.norm2(self.conv2(self.pad2(y)))


def _conv_norm_relu(filters, kernel, strides, init, affine_norm, transpose=False):
  """A conv (or transposed conv) → instance norm → ReLU stage of an encoder or decoder.

  The conv has no bias: the instance norm would cancel it (see the module docstring).
  """
  conv_class = FastBackwardConv2DTranspose if transpose else FastBackwardConv2D
  return keras.Sequential([
      conv_class(filters, kernel, strides=strides, padding='same', use_bias=False,
                 kernel_initializer=kernel_initializer(init)),
      instance_norm(affine_norm),
      layers.ReLU(),
  ])


def _check_divisible_by_4(x, name):
  """Fails early, with the fix, for sizes the two stride-2 stages cannot restore exactly."""
  for size in x.shape[1:3]:
    if size is not None and size % 4:
      raise errors.UserError(
          f'{name} needs image height and width divisible by 4 to return the input size; got '
          f'{tuple(x.shape[1:3])} (resize or crop the images, e.g. to 28 or 32)')


def _encode_transform_decode(generator, x, training):
  """Both generators' body: downsampling encoder, residual blocks, upsampling decoder."""
  for layer in generator.encoder + generator.blocks + generator.decoder:
    x = layer(x, training=training)
  return x


class DigitGenerator(keras.Model):
  """The paper's digit generator (Fig. 7): convs, then two residual blocks, then deconvs.

  conv3 s1 f → conv3 s2 2f → conv3 s2 4f (28 → 14 → 7) → 2 residual blocks at 4f →
  deconv3 s2 2f → deconv3 s2 f (7 → 14 → 28) → conv3 s1 out_channels → tanh; instance norm and
  ReLU after every conv but the last. Zero 'same' padding outside the residual blocks keeps it
  small for digit-sized images; the residual blocks are CycleGAN's (reflect padding).
  """

  def __init__(self, out_channels, filters=64, dropout=0.0, init='normal', affine_norm=False,
               **kwargs):
    super().__init__(**kwargs)
    self.out_channels = out_channels
    stage = lambda f, k, s, **kw: _conv_norm_relu(f, k, s, init, affine_norm, **kw)
    self.encoder = (stage(filters, 3, 1), stage(2 * filters, 3, 2), stage(4 * filters, 3, 2))
    self.blocks = tuple(ResidualBlock(4 * filters, dropout, init, affine_norm,
                                      name=f'block{i + 1}') for i in range(2))
    self.decoder = (stage(2 * filters, 3, 2, transpose=True),
                    stage(filters, 3, 2, transpose=True))
    self.to_image = layers.Conv2D(out_channels, 3, padding='same', name='to_image',
                                  kernel_initializer=kernel_initializer(init))

  def call(self, x, training=False):
    _check_divisible_by_4(x, 'DigitGenerator')
    x = _encode_transform_decode(self, x, training)
    return keras.ops.cast(keras.ops.tanh(self.to_image(x)), 'float32')  # see precision.py


class ResnetGenerator(keras.Model):
  """CycleGAN's ResNet generator (release, SVHN→MNIST): 9 residual blocks by default.

  reflect-pad 3 → conv7 f → conv3 s2 2f → conv3 s2 4f → num_blocks residual blocks (reflect
  padding, optional dropout; the release used 0.5) → deconv3 s2 2f → deconv3 s2 f →
  reflect-pad 3 → conv7 out_channels → tanh, with instance norm and ReLU after every conv but
  the last.
  """

  def __init__(self, out_channels, filters=64, num_blocks=9, dropout=0.0, init='normal',
               affine_norm=False, **kwargs):
    super().__init__(**kwargs)
    self.out_channels = out_channels
    stage = lambda f, k, s, **kw: _conv_norm_relu(f, k, s, init, affine_norm, **kw)
    self.pad_in = ReflectionPad2D(3)
    self.encoder = (
        keras.Sequential([layers.Conv2D(filters, 7, padding='valid', use_bias=False,
                                        kernel_initializer=kernel_initializer(init)),
                          instance_norm(affine_norm),
                          layers.ReLU()]),
        stage(2 * filters, 3, 2),
        stage(4 * filters, 3, 2),
    )
    self.blocks = tuple(ResidualBlock(4 * filters, dropout, init, affine_norm,
                                      name=f'block{i + 1}') for i in range(num_blocks))
    self.decoder = (stage(2 * filters, 3, 2, transpose=True),
                    stage(filters, 3, 2, transpose=True))
    self.pad_out = ReflectionPad2D(3)
    self.to_image = layers.Conv2D(out_channels, 7, padding='valid', name='to_image',
                                  kernel_initializer=kernel_initializer(init))

  def call(self, x, training=False):
    _check_divisible_by_4(x, 'ResnetGenerator')
    x = _encode_transform_decode(self, self.pad_in(x), training)
    return keras.ops.cast(keras.ops.tanh(self.to_image(self.pad_out(x))), 'float32')


GENERATORS = {'digit': DigitGenerator, 'resnet9': ResnetGenerator}


def build_generator(name, out_channels, dropout=0.0, filters=64, init='normal',
                    affine_norm=False):
  """The generator called `name` in configs ('digit' | 'resnet9'), producing `out_channels`.

  `init` and `affine_norm` default to the release's CycleGAN: N(0, 0.02) weights and instance
  norm without scale and offset.

  Raises:
    errors.UserError: for an unknown name, listing the valid ones.
  """
  network = registry.lookup(GENERATORS, name, 'generator', 'config.model.generator')
  kernel_initializer(init)  # validates the name before any layer is built
  return network(out_channels, filters=filters, dropout=dropout, init=init,
                 affine_norm=affine_norm)
