"""Small tensor ops whose TensorFlow defaults are slow on CPU.

`reflect_pad_2d` exists because TF's gradient of reflection padding (`MirrorPadGrad`) is a slow,
mostly serial kernel on CPU: profiling the release pixel step (two ResNet-9 generators, batch
100, 32×32) showed it taking 8 % of the step, more than any op but the convolutions. Its
gradient here folds the mirrored borders back with slices, reversals, zero pads and adds, all
ordinary vectorised kernels; the forward pass is the same `MirrorPad` as before, and the result
is identical.
"""

import tensorflow as tf


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


def reflect_pad_2d(images, pad):
  """Reflection-pads height and width of NHWC `images` by `pad` (same as MirrorPad REFLECT).

  Needs static height and width larger than `pad`, as reflection itself does.
  """
  pad = int(pad)
  if pad == 0:
    return images
  height, width = images.shape[1], images.shape[2]
  if height is None or width is None or min(height, width) <= pad:
    raise ValueError(f'reflect_pad_2d needs static height and width > {pad}; got shape '
                     f'{images.shape}')

  @tf.custom_gradient
  def padded(x):
    def grad(upstream):
      return _fold_reflected_border(_fold_reflected_border(upstream, pad, 2), pad, 1)
    return tf.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]], mode='REFLECT'), grad

  return padded(images)
