"""Losses against values worked out by hand on tiny tensors.

Handy facts used below: softmax([ln 3, 0]) = [3/4, 1/4] and sigmoid(ln 3) = 3/4, so the
cross-entropies are ln(4/3) or ln 4; softmax([0, 0]) = [1/2, 1/2] gives ln 2.
"""

import math

import numpy as np
import pytest
import tensorflow as tf

from cycada_tf import losses

LN2, LN3, LN4, LN4_3 = math.log(2), math.log(3), math.log(4), math.log(4 / 3)


def _close(actual, expected):
  np.testing.assert_allclose(np.asarray(actual), expected, rtol=1e-5, atol=1e-6)


def test_average_divides_by_global_batch():
  _close(losses.average(tf.constant([1.0, 2.0, 3.0]), global_batch_size=6), 1.0)


def test_task_loss_classification():
  logits = tf.constant([[0.0, 0.0], [LN3, 0.0]])
  per_example = losses.task_loss(tf.constant([0, 1]), logits)
  assert per_example.shape == (2,)
  _close(per_example, [LN2, LN4])  # p = 1/2, then p(class 1) = 1/4.


def test_task_loss_segmentation_ignores_void_pixels():
  # Example 0: pixels (label 0, logits [0, 0]) → ln 2; (void, [5, 0]) skipped;
  # (label 1, [ln 3, 0]) → ln 4; mean over the 2 valid pixels = (ln 2 + ln 4) / 2 = 1.5 ln 2.
  # Example 1: all void → 0, not NaN.
  logits = tf.constant([[[[0.0, 0.0], [5.0, 0.0], [LN3, 0.0]]],
                        [[[1.0, 2.0], [3.0, 0.0], [0.0, 0.0]]]])  # [2, 1, 3, 2]
  labels = tf.constant([[[0, 255, 1]], [[255, 255, 255]]])    # [2, 1, 3]
  per_example = losses.task_loss(labels, logits)
  _close(per_example, [1.5 * LN2, 0.0])
  _close(tf.function(losses.task_loss)(labels, logits), [1.5 * LN2, 0.0])


def test_lsgan_losses():
  real = tf.constant([[1.0, 0.0], [0.5, 1.5]])
  fake = tf.constant([[0.0, 1.0], [0.5, -0.5]])
  # D, example 0: 0.5·(mean(0², 1²) + mean(0², 1²)) = 0.5·(0.5 + 0.5) = 0.5.
  # D, example 1: 0.5·(mean(0.25, 0.25) + mean(0.25, 0.25)) = 0.25.
  _close(losses.lsgan_discriminator_loss(real, fake), [0.5, 0.25])
  # G: mean((0−1)², (1−1)²) = 0.5; mean((0.5−1)², (−0.5−1)²) = (0.25 + 2.25)/2 = 1.25.
  _close(losses.lsgan_generator_loss(fake), [0.5, 1.25])


def test_lsgan_reduces_score_maps_per_example():
  real = tf.ones((3, 4, 4, 1))            # Perfect real scores: 0 contribution.
  fake = tf.fill((3, 4, 4, 1), 2.0)       # 2² = 4 everywhere → 0.5·4 = 2.
  _close(losses.lsgan_discriminator_loss(real, fake), [2.0] * 3)


def test_cycle_and_identity_are_per_example_l1():
  x = tf.constant([[1.0, -1.0], [0.0, 0.0]])
  rec = tf.constant([[0.5, -1.0], [1.0, -1.0]])
  _close(losses.cycle_loss(x, rec), [0.25, 1.0])  # mean(0.5, 0); mean(1, 1).
  _close(losses.identity_loss(x[:, None, :, None], rec[:, None, :, None]), [0.25, 1.0])


def test_semantic_loss_with_predicted_labels():
  original_logits = tf.constant([[2.0, 1.0], [0.0, 3.0]])
  labels = losses.predicted_labels(original_logits)
  assert labels.dtype == tf.int64
  np.testing.assert_array_equal(labels.numpy(), [0, 1])
  translated_logits = tf.constant([[0.0, 0.0], [LN3, 0.0]])
  _close(losses.semantic_loss(translated_logits, labels), [LN2, LN4])


SOURCE = tf.constant([[0.0, LN3], [0.0, 0.0]])   # p(source) = 3/4, then 1/2.
TARGET = tf.constant([[LN3, 0.0], [0.0, LN3]])   # p(target) = 3/4, then 1/4.


def test_feature_discriminator_loss_pairs_source_and_target():
  per_pair = losses.feature_discriminator_loss(SOURCE, TARGET)
  # Pair 0: 0.5·(ln(4/3) + ln(4/3)); pair 1: 0.5·(ln 2 + ln 4) = 1.5 ln 2.
  _close(per_pair, [LN4_3, 1.5 * LN2])
  # Averaging over the global batch (2) equals the mean over all 4 source+target examples.
  _close(losses.average(per_pair, 2), (2 * LN4_3 + LN2 + LN4) / 4)


def test_feature_discriminator_loss_on_score_maps_of_different_sizes():
  source = tf.zeros((2, 1, 3, 2))                    # ln 2 at every position.
  target = tf.tile(TARGET[:, None, None, :], (1, 2, 2, 1))
  _close(losses.feature_discriminator_loss(source, target),
         [0.5 * (LN2 + LN4_3), 0.5 * (LN2 + LN4)])


def test_feature_generator_loss_uses_the_inverted_label():
  # Target features scored against "source": p = 1/4 → ln 4; p = 3/4 → ln(4/3).
  _close(losses.feature_generator_loss(TARGET), [LN4, LN4_3])


def test_discriminator_accuracy_is_per_example_source_then_target():
  # Source: argmax 1 (right), argmax of a tie is 0 (wrong). Target: 0 (right), 1 (wrong).
  accuracy = losses.discriminator_accuracy(SOURCE, TARGET)
  np.testing.assert_array_equal(accuracy.numpy(), [1.0, 0.0, 1.0, 0.0])
  _close(losses.average(accuracy, 4), 0.5)


@pytest.mark.parametrize('loss', [losses.lsgan_generator_loss])
def test_generator_losses_prefer_real_looking_scores(loss):
  good, bad = loss(tf.constant([[1.0]])), loss(tf.constant([[-3.0]]))
  assert float(good[0]) < float(bad[0])
