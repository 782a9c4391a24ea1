"""Discriminators: score-map shapes, the 500-500-2 feature net, instance-norm placement."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from cycada_tf import errors
from cycada_tf import models


@pytest.mark.parametrize('name, size, expected', [
    # The release's padw=1: 28 → 14 → 7 → 3 (three k4 s2 convs) → 2 → 1 (two k4 s1 convs).
    ('patchgan', 28, 1),
    ('patchgan', 32, 2),  # 32 → 16 → 8 → 4 → 3 → 2.
    ('conv6', 28, 7),     # 28 → 14 → 7 with two stride-2 convs.
    ('conv6', 32, 8),
])
def test_image_discriminators_give_one_score_per_position(name, size, expected):
  discriminator = models.build_image_discriminator(name, filters=4)
  scores = discriminator(tf.zeros((3, size, size, 1)) + 0.3, training=False)
  assert scores.shape == (3, expected, expected, 1)


@pytest.mark.parametrize('size, expected', [(28, 4), (32, 4)])
def test_patchgan_same_padding_is_the_override(size, expected):
  discriminator = models.build_image_discriminator('patchgan', filters=4, padding='same')
  assert discriminator(tf.zeros((1, size, size, 1))).shape == (1, expected, expected, 1)


def test_pixel_networks_start_from_the_release_normal_init():
  discriminator = models.build_image_discriminator('patchgan')
  discriminator(tf.zeros((1, 32, 32, 3)))
  kernels = np.concatenate([v.numpy().ravel() for v in discriminator.trainable_variables
                            if 'kernel' in v.path])
  assert abs(kernels.mean()) < 1e-3 and kernels.std() == pytest.approx(0.02, rel=0.02)
  glorot = models.build_image_discriminator('patchgan', init='glorot')
  glorot(tf.zeros((1, 32, 32, 3)))
  # Glorot uniform, fan in 4·4·3 and out 4·4·64: std √(2/1072) = 0.043.
  assert glorot.stack[1].kernel.numpy().std() > 0.035
  with pytest.raises(errors.UserError, match='gan_init'):
    models.build_image_discriminator('patchgan', init='he')


def test_patchgan_follows_release_layout():
  discriminator = models.build_image_discriminator('patchgan')
  discriminator(tf.zeros((1, 32, 32, 3)))
  convs = [l for l in discriminator.stack if isinstance(l, keras.layers.Conv2D)]
  convs.append(discriminator.score)
  assert [c.filters for c in convs] == [64, 128, 256, 512, 1]
  assert [c.strides for c in convs] == [(2, 2)] * 3 + [(1, 1)] * 2
  assert all(c.kernel_size == (4, 4) for c in convs)
  kinds = ['Conv2D' if isinstance(l, keras.layers.Conv2D) else type(l).__name__
           for l in discriminator.stack + discriminator.score_padding]
  # Every conv zero-padded by 1 (the release's padw=1). No norm after the first conv, instance
  # norm after the next three, none on the score conv.
  assert kinds == (['ZeroPadding2D', 'Conv2D', 'LeakyReLU'] +
                   ['ZeroPadding2D', 'Conv2D', 'InstanceNormalization', 'LeakyReLU'] * 3 +
                   ['ZeroPadding2D'])
  assert all(c.padding == 'valid' for c in convs)
  assert all(l.padding == ((1, 1), (1, 1)) for l in discriminator.stack
             if isinstance(l, keras.layers.ZeroPadding2D))
  norms = [l for l in discriminator.stack if isinstance(l, models.InstanceNormalization)]
  assert [n.affine for n in norms] == [False] * 3 and not discriminator.stack[3].weights
  assert all(n.epsilon == 1e-5 for n in norms)  # PyTorch InstanceNorm2d's


def test_image_discriminator_parameter_counts_by_hand():
  # Convs followed by instance norm (no parameters: the release's affine=False) have no bias;
  # the first and the score conv, with no norm after them, have one.
  patchgan = models.build_image_discriminator('patchgan')
  patchgan(tf.zeros((1, 32, 32, 3)))
  assert patchgan.count_params() == (
      (4 * 4 * 3 * 64 + 64)
      + (4 * 4 * 64 * 128) + (4 * 4 * 128 * 256) + (4 * 4 * 256 * 512)
      + (4 * 4 * 512 * 1 + 1)) == 2_763_841
  conv6 = models.build_image_discriminator('conv6', filters=4)
  conv6(tf.zeros((1, 28, 28, 1)))
  assert conv6.count_params() == (
      (3 * 3 * 1 * 4 + 4)
      + (3 * 3 * 4 * 4) + (3 * 3 * 4 * 8) + (3 * 3 * 8 * 8) + (3 * 3 * 8 * 16)
      + (3 * 3 * 16 * 1 + 1)) == 2_345
  convs = [l for l in patchgan.stack if isinstance(l, keras.layers.Conv2D)] + [patchgan.score]
  assert [c.use_bias for c in convs] == [True, False, False, False, True]


def test_conv6_has_six_convolutions():
  discriminator = models.build_image_discriminator('conv6')
  discriminator(tf.zeros((1, 28, 28, 1)))
  convs = [l for l in discriminator.stack if isinstance(l, keras.layers.Conv2D)]
  assert len(convs) + 1 == 6


def test_feature_discriminator_is_500_500_2():
  discriminator = models.build_feature_discriminator()
  logits = discriminator(tf.ones((4, 10)))
  assert logits.shape == (4, 2)
  # 10·500 + 500, 500·500 + 500, 500·2 + 2.
  assert discriminator.count_params() == 5_500 + 250_500 + 1_002


def test_feature_discriminator_acts_per_position_on_score_maps():
  # Dense on the last axis = 1×1 convolutions, what the segmentation D_feat needs.
  discriminator = models.FeatureDiscriminator(hidden=(8, 6), num_outputs=2)
  maps = tf.random.stateless_normal((2, 3, 5, 19), seed=(0, 0))
  out = discriminator(maps).numpy()
  assert out.shape == (2, 3, 5, 2)
  np.testing.assert_allclose(discriminator(maps[:, 1, 4]).numpy(), out[:, 1, 4], atol=1e-5)


def test_feature_discriminator_dropout_only_in_training():
  discriminator = models.FeatureDiscriminator(hidden=32, dropout=0.5)
  x = tf.random.stateless_normal((4, 10), seed=(1, 0))
  inference = discriminator(x).numpy()
  np.testing.assert_array_equal(discriminator(x).numpy(), inference)
  assert not np.allclose(discriminator(x, training=True).numpy(), inference)


@pytest.mark.parametrize('name', ['patchgan', 'conv6'])
def test_checkpoint_restores_image_discriminator(name, tmp_path):
  x = tf.random.stateless_uniform((2, 28, 28, 1), seed=(2, 0), minval=-1, maxval=1)
  keras.utils.set_random_seed(1)
  discriminator = models.build_image_discriminator(name, filters=4)
  expected = tf.function(lambda v: discriminator(v))(x).numpy()
  path = tf.train.Checkpoint(d=discriminator).write(str(tmp_path / 'ckpt'))
  assert len([n for n, _ in tf.train.list_variables(path) if n.startswith('d/')]) == len(
      discriminator.weights)
  keras.utils.set_random_seed(2)
  fresh = models.build_image_discriminator(name, filters=4)
  fresh(x)
  tf.train.Checkpoint(d=fresh).read(path).assert_existing_objects_matched()
  np.testing.assert_allclose(fresh(x).numpy(), expected, atol=1e-5)


def test_unknown_image_discriminator_lists_valid_names():
  with pytest.raises(errors.UserError, match=r"'conv6', 'patchgan'"):
    models.build_image_discriminator('stylegan')
