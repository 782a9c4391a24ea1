"""CyCADA's losses (docs/method.md §1, §3) as per-example tensors.

Every loss here returns one value per example, shape [B]: score maps and pixels are reduced per
example first, by their mean. The caller turns that into the scalar to minimise with `average`
(`tf.nn.compute_average_loss`), dividing by the *global* batch size, so that summing the replicas'
gradients under `MirroredStrategy` gives exactly the single-device gradient.

Conventions: `labels` are integer class ids, `logits` unnormalised scores with classes on the last
axis, image-discriminator outputs are raw scores (any shape [B, ...]).
"""

import tensorflow as tf


def average(per_example, global_batch_size):
  """The replica's share of the global mean: sum(per_example) / global_batch_size.

  A thin wrapper so that every training step averages the same way; under a distribution
  strategy each replica sees only its slice of the batch but divides by the global size.
  """
  return tf.nn.compute_average_loss(per_example, global_batch_size=global_batch_size)


def per_example_mean(values):
  """Mean over every axis but the first: [B, ...] → [B]; a [B] tensor is returned as is."""
  values = tf.convert_to_tensor(values)
  if values.shape.rank == 1:
    return values
  return tf.reduce_mean(values, axis=tf.range(1, tf.rank(values)))


def _as_float(x):
  """float32 for any input: losses are always computed in float32, even when a network runs in
  bfloat16 (mixed precision), where sums over many pixels would lose most of their digits."""
  x = tf.convert_to_tensor(x)
  return x if x.dtype == tf.float32 else tf.cast(x, tf.float32)


def task_loss(labels, logits, ignore_label=255):
  """Softmax cross-entropy per example (docs/method.md §1, Eq. 1 L_task).

  Classification: logits [B, C], labels [B] → [B]. Segmentation: logits [B, H, W, C], labels
  [B, H, W] → [B], the mean over the pixels whose label is not `ignore_label`; an example with no
  valid pixel contributes 0 (not NaN), so one unlabelled crop cannot poison a batch.
  """
  logits = _as_float(logits)
  labels = tf.cast(labels, tf.int32)
  if logits.shape.rank == 2:
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
  valid = tf.not_equal(labels, ignore_label)
  safe_labels = tf.where(valid, labels, tf.zeros_like(labels))
  pixel_losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=safe_labels, logits=logits)
  valid = tf.cast(valid, pixel_losses.dtype)
  axes = tf.range(1, tf.rank(pixel_losses))
  return tf.math.divide_no_nan(tf.reduce_sum(pixel_losses * valid, axis=axes),
                               tf.reduce_sum(valid, axis=axes))


def correct_fraction(labels, logits, ignore_label=255):
  """Per-example fraction of right argmax predictions, [B]: 0 or 1 for a label per image, the
  fraction of labelled pixels (label ≠ `ignore_label`) for score maps; 0 with none labelled."""
  predictions = tf.argmax(_as_float(logits), axis=-1, output_type=tf.int32)
  labels = tf.cast(labels, tf.int32)
  correct = tf.cast(tf.equal(predictions, labels), tf.float32)
  if logits.shape.rank == 2:
    return correct
  valid = tf.cast(tf.not_equal(labels, ignore_label), tf.float32)
  axes = tf.range(1, tf.rank(correct))
  return tf.math.divide_no_nan(tf.reduce_sum(correct * valid, axis=axes),
                               tf.reduce_sum(valid, axis=axes))


def lsgan_discriminator_loss(real_scores, fake_scores):
  """Least-squares D loss, halved as in CycleGAN: 0.5·(mean((real − 1)²) + mean(fake²))."""
  real = per_example_mean(tf.square(_as_float(real_scores) - 1.0))
  fake = per_example_mean(tf.square(_as_float(fake_scores)))
  return 0.5 * (real + fake)


def lsgan_generator_loss(fake_scores):
  """Least-squares G loss: the generator wants its fakes scored as real, mean((fake − 1)²)."""
  return per_example_mean(tf.square(_as_float(fake_scores) - 1.0))


def cycle_loss(x, x_reconstructed):
  """Cycle consistency (Eq. 3): per-example mean |x − G_TS(G_ST(x))|, the L1 of CycleGAN."""
  return per_example_mean(tf.abs(_as_float(x) - _as_float(x_reconstructed)))


def identity_loss(x, g_of_x):
  """CycleGAN's identity term: a generator fed its own output domain should change nothing."""
  return per_example_mean(tf.abs(_as_float(x) - _as_float(g_of_x)))


def predicted_labels(logits):
  """p(f, X) = argmax f(X) (Eq. 4) as int64 labels, the pseudo-labels of the semantic loss."""
  return tf.argmax(logits, axis=-1, output_type=tf.int64)


def semantic_loss(translated_logits, labels):
  """Semantic consistency (Eq. 4), one direction: CE of f_S(G(X)) against `labels`.

  `translated_logits` are the frozen classifier's logits on translated images; `labels` are
  `predicted_labels(f_S(X))` on the originals (paper) or the true source labels (release, S→T).
  Sum the two directions' results for the full L_sem.
  """
  return task_loss(labels, translated_logits)


def _constant_class_ce(logits, label):
  """Per-example CE of 2-way logits [B, ..., 2] against one class for every position."""
  logits = _as_float(logits)
  labels = tf.fill(tf.shape(logits)[:-1], tf.constant(label, tf.int32))
  return per_example_mean(
      tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))


SOURCE_LABEL = 1
TARGET_LABEL = 0


def feature_discriminator_loss(source_d_logits, target_d_logits):
  """D_feat's 2-way CE (source = 1, target = 0) as one [B] vector: 0.5·(ce_src[i] + ce_tgt[i]).

  Pairing the i-th source and i-th target example (both halves have the same batch size B) keeps
  the result a per-example vector of the usual length, so
  `average(loss, global_batch_size=B_global)` is exactly 0.5·(mean source CE + mean target CE),
  the loss over the 2B concatenated examples.
  Score maps [B, h, w, 2] are reduced per example first, which also lets the halves differ in h, w.
  """
  source = _constant_class_ce(source_d_logits, SOURCE_LABEL)
  target = _constant_class_ce(target_d_logits, TARGET_LABEL)
  return 0.5 * (source + target)


def feature_generator_loss(target_d_logits):
  """f_T's adversarial loss: CE of D_feat on target features against the inverted label (source)."""
  return _constant_class_ce(target_d_logits, SOURCE_LABEL)


def discriminator_accuracy(source_d_logits, target_d_logits):
  """Per-example correctness of D_feat, [2B] floats: the source half then the target half.

  For [B, 2] logits each entry is 0 or 1; for score maps it is the fraction of correct positions
  of that example. Averaging with `average(acc, 2·B_global)` gives the exact global accuracy used
  by the 60 % gate.
  """
  def correct(logits, label):
    predicted = tf.argmax(logits, axis=-1, output_type=tf.int32)
    return per_example_mean(tf.cast(tf.equal(predicted, label), tf.float32))

  return tf.concat([correct(source_d_logits, SOURCE_LABEL),
                    correct(target_d_logits, TARGET_LABEL)], axis=0)
