"""Small tensor ops whose TensorFlow defaults are slow on CPU.

These run only on the `cpu_tuned` kernel path (`config.train.kernels`, see cycada_tf/kernels.py):
the layers in `cycada_tf.models` call them when `kernels.cpu_tuned()` is true and TF's own ops
otherwise. `leaky_relu` is the exception: the discriminators always use it, because it fixes a
graph rewrite rather than a slow kernel. The timings behind each choice come from
`python -m train.bench_ops` and `python -m train.bench`; see docs/performance.md ("What was
changed after profiling").

`reflect_pad_2d` exists because TF's reflection padding (`MirrorPad` and its gradient
`MirrorPadGrad`) is slow on CPU. ResNet-9 pads before every 3×3 convolution, and in a profile of
the release pixel step (two ResNet-9 generators, batch 100, 32×32) the gradient took more time
than any op but the convolutions; the forward kernel is several times slower than a plain copy.
Here the forward pass gathers the mirrored rows, then columns, and the gradient folds the
mirrored borders back with slices, reversals, zero pads and adds, all ordinary vectorised
kernels. Values and gradients are identical to `MirrorPad`'s.

`conv2d` exists because oneDNN's bfloat16 filter gradient (`Conv2DBackpropFilter`) is barely
faster than its float32 one for the ResNet-9 residual convolutions (3×3, 256 → 256 channels on
10×10 padded maps), while the forward convolution and the input gradient do gain from bfloat16,
so the filter gradient holds back the bfloat16 step. See its docstring. On CPUs with AMX,
oneDNN's own bfloat16 filter gradient is fast and the swap is slower, so the swap is used only
where `kernels.swaps_filter_gradient()` says so (`config.train.filter_gradient`, by default
chosen from the CPU's flags). `conv2d_transpose`
applies the same swap to transposed convolutions, and `transpose` moves bfloat16 tensors faster
than TF's kernel.
"""

import tensorflow as tf

from cycada_tf import kernels


def _fold_reflected_border(grad, pad, axis):
  """Gradient of reflect-padding one spatial `axis` by `pad`: adds each border onto its source.

  Padded index i < pad copies input index pad - i; padded index pad + n + k copies input
  index n - 2 - k (reflection excludes the edge row). So the reversed top border is added to
  input rows 1..pad and the reversed bottom border to rows n-1-pad..n-2. The result is put
  together with one concat, so only the border rows are added, not whole zero-padded tensors.
  """
  padded = grad.shape[axis]
  n = padded - 2 * pad

  def take(start, stop):
    begin = [0] * grad.shape.rank
    size = [-1] * grad.shape.rank
    begin[axis], size[axis] = start, stop - start
    return tf.slice(grad, begin, size)

  top = tf.reverse(take(0, pad), [axis])  # adds to input rows 1..pad
  bottom = tf.reverse(take(pad + n, padded), [axis])  # adds to input rows n-1-pad..n-2
  center = lambda start, stop: take(pad + start, pad + stop)  # input rows start..stop-1
  if n - 1 - pad <= pad:
    # The two bands overlap (tiny maps): add each band as a zero-padded full tensor.
    def place(piece, before, after):
      paddings = [[0, 0]] * grad.shape.rank
      paddings[axis] = [before, after]
      return tf.pad(piece, paddings)
    return center(0, n) + place(top, 1, n - 1 - pad) + place(bottom, n - 1 - pad, 1)
  return tf.concat([center(0, 1), center(1, pad + 1) + top, center(pad + 1, n - 1 - pad),
                    center(n - 1 - pad, n - 1) + bottom, center(n - 1, n)], axis)


def _reflected_indices(size, pad):
  """Source index of each position of a length-`size` axis reflection-padded by `pad`."""
  return ([pad - i for i in range(pad)] + list(range(size)) +
          [size - 2 - i for i in range(pad)])


def reflect_pad_2d(images, pad):
  """Reflection-pads height and width of NHWC `images` by `pad` (same as MirrorPad REFLECT).

  Needs height and width larger than `pad`, as reflection itself does. With unknown height or
  width (a serving signature or a translation of whole images of any size) it is TF's MirrorPad:
  the gather below needs the sizes to build its indices, and such graphs take no gradient.
  """
  pad = int(pad)
  if pad == 0:
    return images
  height, width = images.shape[1], images.shape[2]
  if height is None or width is None:
    return tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]], mode='REFLECT')
  if min(height, width) <= pad:
    raise ValueError(f'reflect_pad_2d needs static height and width > {pad}; got shape '
                     f'{images.shape}')

  rows, columns = _reflected_indices(height, pad), _reflected_indices(width, pad)

  @tf.custom_gradient
  def padded(x):
    def grad(upstream):
      return _fold_reflected_border(_fold_reflected_border(upstream, pad, 2), pad, 1)
    return tf.gather(tf.gather(x, rows, axis=1), columns, axis=2), grad

  return padded(images)


# Largest padded input height and width for which `conv2d` swaps the filter gradient: the
# swapped convolution's kernel is the output map, so the swap loses its advantage as maps grow;
# on 34×34 maps (3×3 convs, 64 channels) it was slower than TF's kernel (docs/performance.md).
SWAPPED_FILTER_GRADIENT_MAX_SIZE = 18
# Fewest input channels for the swap (the swapped convolution's batch is the channel count), by
# stride: the smallest counts at which the swap was timed faster than TF's kernel. Stride 1: 128
# and 256 channels on 10×10 maps. Stride 2 (PatchGAN's 4×4 convs, batch 100): 64 channels on
# 18×18 padded maps and 128 on 10×10, but not 3 channels, where TF's kernel was faster. Other
# counts are left to TF's kernel, as they were not timed. The figures are in docs/performance.md.
SWAPPED_FILTER_GRADIENT_MIN_CHANNELS = {1: 128, 2: 64}


def _explicit_padding(size, kernel, stride, padding):
  """(before, after) zero padding TF applies to one spatial axis for 'SAME' or 'VALID'."""
  if padding == 'VALID':
    return 0, 0
  out = -(-size // stride)
  total = max((out - 1) * stride + kernel - size, 0)
  return total // 2, total - total // 2


def transpose(x, perm):
  """`tf.transpose`, with bfloat16 tensors moved as their uint16 bits.

  Why: TF on CPU transposes bfloat16 with oneDNN's reorder, which is slow for the permutations
  used here (the swapped filter gradient's [C, H, W, N] input, an instance norm's [H, W, N, C]
  view); the same bits as uint16 take TF's generic transpose kernel, which is faster for them
  (timed by `python -m train.bench_ops --shape=...`; see docs/performance.md).
  Values are the same bits; the gradient is the inverse permutation, moved the same way.
  """
  perm = [int(p) for p in perm]
  if x.dtype != tf.bfloat16:
    return tf.transpose(x, perm)
  inverse = [perm.index(axis) for axis in range(len(perm))]
  move = lambda t, order: tf.bitcast(tf.transpose(tf.bitcast(t, tf.uint16), order), tf.bfloat16)

  @tf.custom_gradient
  def moved(x):
    return move(x, perm), lambda upstream: move(upstream, inverse)

  return moved(x)


def _pair(strides):
  return (strides, strides) if isinstance(strides, int) else tuple(strides)


def _swap_pads(shape, dtype, kernel_shape, stride_pair, padding):
  """Explicit (rows, cols) zero padding when the filter gradient of a convolution over an NHWC
  input of static `shape` and `dtype` should be the swapped forward convolution (see `conv2d`),
  else None."""
  rows, cols, channels = shape[1], shape[2], shape[3]
  if (dtype != tf.bfloat16 or not kernels.swaps_filter_gradient()
      or None in (rows, cols, channels)
      or stride_pair[0] != stride_pair[1]
      or channels < SWAPPED_FILTER_GRADIENT_MIN_CHANNELS.get(stride_pair[0], float('inf'))):
    return None
  pads = [_explicit_padding(size, k, stride_pair[0], padding)
          for size, k in zip((rows, cols), kernel_shape[:2])]
  if max(rows + sum(pads[0]), cols + sum(pads[1])) > SWAPPED_FILTER_GRADIENT_MAX_SIZE:
    return None
  return pads


def _swapped_filter_gradient(x, dy, kernel_shape, stride, pads):
  """dW[i, j, c, o] = Σ_{n,h,w} xp[n, s·h+i, s·w+j, c] · dy[n, h, w, o] as a forward convolution
  with batch and channels swapped (see `conv2d`); `xp` is `x` zero-padded by `pads`."""
  padded = tf.pad(x, [[0, 0], list(pads[0]), list(pads[1]), [0, 0]]) if any(
      sum(p) for p in pads) else x
  images = transpose(padded, [3, 1, 2, 0])  # [C, H, W, N]
  filters = transpose(dy, [1, 2, 0, 3])  # [H', W', N, O]
  swapped = tf.nn.conv2d(images, filters, 1, 'VALID', dilations=stride)
  # 'VALID' strided convolutions can leave unread rows at the end: keep the k×k taps.
  return transpose(swapped[:, :kernel_shape[0], :kernel_shape[1], :], [1, 2, 0, 3])


def conv2d(x, kernel, strides=1, padding='VALID'):
  """2-D convolution of NHWC `x` ('SAME' or 'VALID'); in bfloat16 on small maps, a faster backward.

  The forward pass and the input gradient are TensorFlow's own. In bfloat16, for (padded) inputs
  at most `SWAPPED_FILTER_GRADIENT_MAX_SIZE` high and wide with enough input channels
  (`SWAPPED_FILTER_GRADIENT_MIN_CHANNELS`, by stride), the filter gradient
  dW[i, j, c, o] = Σ_{n,h,w} xp[n, s·h+i, s·w+j, c] · dy[n, h, w, o] (xp: x zero-padded as the
  convolution pads it, s: the stride) is computed as a forward convolution with batch and
  channels swapped: xp as [C, H, W, N] images convolved with dy as a [H', W', N, O] kernel
  dilated by s gives [C, k, k, O]. oneDNN's bfloat16 filter gradient is slow on these shapes
  (no faster than float32, or slower), while its forward convolution is fast, so the swap is
  faster for the residual blocks' 3×3 convolutions and PatchGAN's stride-2 4×4 ones (timed
  alone at batch 100; see docs/performance.md). The values are the same sums in another order,
  rounded to bfloat16 as the native gradient is. Only where `kernels.swaps_filter_gradient()`
  (by default not on CPUs with AMX, whose oneDNN filter gradient is fast).
  """
  # A tensor, not a (Keras, possibly autocast) variable: the custom gradient below is for
  # tensors, and the cast's own gradient carries dW back to a float32 variable.
  kernel = tf.cast(kernel, x.dtype)
  stride_pair = _pair(strides)
  pads = _swap_pads(x.shape, x.dtype, kernel.shape, stride_pair, padding)
  if pads is None:
    return tf.nn.conv2d(x, kernel, stride_pair, padding)
  stride = stride_pair[0]

  @tf.custom_gradient
  def convolve(x, kernel):
    def grad(dy):
      dx = tf.nn.conv2d_transpose(dy, kernel, tf.shape(x), stride, padding)
      return dx, _swapped_filter_gradient(x, dy, kernel.shape, stride, pads)
    return tf.nn.conv2d(x, kernel, stride, padding), grad

  return convolve(x, kernel)


def conv2d_transpose(x, kernel, strides=1, padding='VALID'):
  """Transposed 2-D convolution of NHWC `x` by a [k, k, out, in] `kernel`, sized as Keras'
  `Conv2DTranspose` without `output_padding`; in bfloat16 on small maps, a faster backward.

  The transposed convolution's filter gradient is a convolution's filter gradient with the roles
  of input and output exchanged: that of the convolution of the output's gradient dy (the
  "input", [N, H_out, W_out, out]) whose output gradient is x. So it takes the same swap as
  `conv2d`, under the same conditions on dy's size and channels. For the generator's first
  decoder stage (256 → 128 channels, 8×8 → 16×16) the swapped bfloat16 filter gradient was
  faster than oneDNN's, timed alone at batch 100 (docs/performance.md). The forward pass and the
  input gradient are TensorFlow's own.
  """
  kernel = tf.cast(kernel, x.dtype)
  stride_pair = _pair(strides)
  dynamic_shape = tf.shape(x)

  def output_size(axis):
    size = x.shape[axis] if x.shape[axis] is not None else dynamic_shape[axis]
    k, s = kernel.shape[axis - 1], stride_pair[axis - 1]
    return size * s + (max(k - s, 0) if padding == 'VALID' else 0)

  out_rows, out_cols = output_size(1), output_size(2)
  output_shape = tf.stack([dynamic_shape[0], out_rows, out_cols, kernel.shape[2]])
  # The output's static shape decides the swap, as x's does in `conv2d`.
  static_sizes = [size if isinstance(size, int) else None for size in (out_rows, out_cols)]
  static_output = [None, *static_sizes, kernel.shape[2]]
  pads = _swap_pads(static_output, x.dtype, kernel.shape, stride_pair, padding)
  if pads is None:
    return tf.nn.conv2d_transpose(x, kernel, output_shape, stride_pair, padding)
  stride = stride_pair[0]

  @tf.custom_gradient
  def convolve(x, kernel):
    def grad(dy):
      dx = tf.nn.conv2d(dy, kernel, stride, padding)
      return dx, _swapped_filter_gradient(dy, x, kernel.shape, stride, pads)
    return tf.nn.conv2d_transpose(x, kernel, output_shape, stride, padding), grad

  return convolve(x, kernel)


def instance_norm(x, gamma, beta, epsilon):
  """Instance normalisation of NHWC `x` with per-channel scale `gamma` and offset `beta`.

  Each image's channel is normalised over its own H×W, as `keras.layers.GroupNormalization(
  groups=-1)` does, but as one fused kernel: a batch norm in training mode over the [1, H, W, N·C]
  view of `x` (N·C "channels", each one image's channel). Forward and backward are then oneDNN's
  fused batch-norm kernels instead of Keras' dozen element-wise ops and reductions with float32
  copies of bfloat16 activations; the two transposes that make the view are plain copies.
  Statistics are float32 whatever `x`'s dtype. It speeds up the bfloat16 release pixel step; in
  float32 the two are within noise (timed by `python -m train.bench`; see docs/performance.md).
  """
  shape = tf.shape(x)
  n, h, w, c = shape[0], shape[1], shape[2], shape[3]
  view = tf.reshape(transpose(x, [1, 2, 0, 3]), tf.stack([1, h, w, n * c]))
  normalised, *_ = tf.raw_ops.FusedBatchNormV3(
      x=view, scale=tf.tile(tf.cast(gamma, tf.float32), [n]),
      offset=tf.tile(tf.cast(beta, tf.float32), [n]),
      mean=tf.zeros([0]), variance=tf.zeros([0]), epsilon=epsilon, is_training=True)
  return transpose(tf.reshape(normalised, tf.stack([h, w, n, c])), [2, 0, 1, 3])


def leaky_relu(x, negative_slope):
  """`tf.nn.leaky_relu` whose gradient reads the activation's output instead of its input.

  Why: TF's own gradient, `LeakyReluGrad(dy, features=x)`, keeps a second consumer on the
  pre-activation x. When x is a convolution's `BiasAdd`, Grappler's remapper fuses Conv2D +
  BiasAdd + LeakyRelu into one `_FusedConv2D`, which removes the BiasAdd node that the gradient
  still reads, and the whole remapper pass then fails for the function ("Mutation::Apply error:
  fanout ... LeakyReluGrad exist for missing node ... BiasAdd"): every fusion it would have made
  in the training step is dropped. For a positive slope, y = leaky_relu(x) has the sign of x, so
  `LeakyReluGrad(dy, features=y)` is the same gradient, and x keeps a single consumer.
  """
  negative_slope = float(negative_slope)
  if negative_slope <= 0.0:
    raise ValueError(f'leaky_relu needs a positive slope to read signs from its output; got '
                     f'{negative_slope}')

  @tf.custom_gradient
  def activation(features):
    outputs = tf.nn.leaky_relu(features, alpha=negative_slope)

    def grad(upstream):
      return tf.raw_ops.LeakyReluGrad(gradients=upstream, features=outputs, alpha=negative_slope)

    return outputs, grad

  return activation(x)
