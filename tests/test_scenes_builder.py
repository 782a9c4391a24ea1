"""The procedural street-scene domains (`scenes_synthetic` → `scenes_real`): TFDS builds, labels,
determinism and the style gap between the two domains."""

import time

import numpy as np
import pytest

from cycada_tf.data.builders.scenes import scenes_dataset_builder as scenes
from cycada_tf.data.builders.scenes.scenes_dataset_builder import ScenesReal, ScenesSynthetic

H, W, _ = scenes.IMAGE_SHAPE


def _arrays(builder, split):
  examples = list(builder.as_dataset(split=split).as_numpy_iterator())
  images = np.stack([e['image'] for e in examples])
  labels = np.stack([e['segmentation_label'] for e in examples])
  return images, labels


@pytest.fixture(scope='module')
def built(tmp_path_factory):
  """Both domains built once into a tmp data_dir: {name: (builder, {split: (images, labels)})}."""
  data_dir = str(tmp_path_factory.mktemp('scenes'))
  out = {}
  for cls in (ScenesSynthetic, ScenesReal):
    start = time.perf_counter()
    builder = cls(data_dir=data_dir)
    builder.download_and_prepare()
    print(f'{cls.name}: generated and written in {time.perf_counter() - start:.1f} s')
    out[cls.name] = builder, {split: _arrays(builder, split) for split in ('train', 'test')}
  return out


def test_module_constants_and_names():
  assert scenes.CLASS_NAMES == ('road', 'sidewalk', 'building', 'sky', 'vegetation', 'car',
                                'person', 'pole')
  assert scenes.NUM_CLASSES == 8 and scenes.IGNORE_LABEL == 255
  assert scenes.IMAGE_SHAPE == (64, 128, 3) and scenes.LABEL_SHAPE == (64, 128, 1)
  assert ScenesSynthetic.name == 'scenes_synthetic' and ScenesReal.name == 'scenes_real'
  for cls in (ScenesSynthetic, ScenesReal):
    assert cls.CLASS_NAMES == scenes.CLASS_NAMES and str(cls.VERSION) == '1.0.0'
  assert ScenesSynthetic.SEED != ScenesReal.SEED
  assert scenes.colorize(np.array([[0, 7, 255]], np.uint8)).tolist() == [
      [list(scenes.PALETTE[0]), list(scenes.PALETTE[7]), [0, 0, 0]]]


def test_builds_splits_shapes_and_labels(built):
  for name, (builder, splits) in built.items():
    info = builder.info
    assert info.supervised_keys == ('image', 'segmentation_label')
    assert {s: info.splits[s].num_examples for s in ('train', 'test')} == {
        'train': scenes.NUM_TRAIN, 'test': scenes.NUM_TEST}
    assert builder.CLASS_NAMES == scenes.CLASS_NAMES
    for split, (images, labels) in splits.items():
      count = scenes.NUM_TRAIN if split == 'train' else scenes.NUM_TEST
      assert images.shape == (count, H, W, 3) and images.dtype == np.uint8, name
      assert labels.shape == (count, H, W, 1) and labels.dtype == np.uint8, name
      values = np.unique(labels)
      assert set(values.tolist()) <= set(range(scenes.NUM_CLASSES)) | {255}, (name, values)
      void = np.mean(labels == 255)
      assert 0 < void < 0.02, (name, split, void)
    train_labels = splits['train'][1]
    present = np.bincount(train_labels.ravel(), minlength=256)[:scenes.NUM_CLASSES]
    assert (present > 0).all(), (name, present)
    # Every class is common, not a handful of pixels: at least 0.5 % of the train pixels.
    assert (present / train_labels.size > 0.005).all(), (name, present / train_labels.size)


def test_built_data_is_render_scene_of_the_example_keys(built):
  for name, (builder, splits) in built.items():
    images, labels = splits['test']
    image, label = scenes.render_scene(scenes.example_rng(builder.SEED, 'test', 0), builder.STYLE)
    matches = [i for i in range(len(images)) if np.array_equal(images[i], image)]
    assert len(matches) == 1, name
    np.testing.assert_array_equal(labels[matches[0], ..., 0], label)


def test_two_builds_are_identical(built, tmp_path):
  builder = ScenesSynthetic(data_dir=str(tmp_path))
  builder.download_and_prepare()
  images, labels = _arrays(builder, 'test')
  first_images, first_labels = built['scenes_synthetic'][1]['test']
  np.testing.assert_array_equal(images[:5], first_images[:5])
  np.testing.assert_array_equal(labels[:5], first_labels[:5])


def test_render_scene_is_deterministic_and_styles_share_the_layout():
  for style in scenes.STYLES:
    a = scenes.render_scene(np.random.default_rng([7, 1, 3]), style)
    b = scenes.render_scene(np.random.default_rng([7, 1, 3]), style)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert a[0].shape == (H, W, 3) and a[0].dtype == np.uint8
    assert a[1].shape == (H, W) and a[1].dtype == np.uint8
  synthetic = scenes.render_scene(np.random.default_rng(11), 'synthetic')
  real = scenes.render_scene(np.random.default_rng(11), 'real')
  np.testing.assert_array_equal(synthetic[1], real[1])  # Same seed: same layout, other look.
  assert not np.array_equal(synthetic[0], real[0])
  other = scenes.render_scene(np.random.default_rng(12), 'synthetic')
  assert not np.array_equal(synthetic[1], other[1])
  with pytest.raises(ValueError, match='Unknown style'):
    scenes.render_scene(np.random.default_rng(0), 'cartoon')


def test_layouts_vary():
  labels = np.stack([scenes.render_scene(np.random.default_rng([5, i]), 'synthetic')[1]
                     for i in range(40)])
  sky_rows = [np.flatnonzero((label == scenes.SKY).any(axis=1)).max() for label in labels]
  assert np.ptp(sky_rows) >= 8  # Horizon and building heights vary.
  cars = (labels == scenes.CAR).sum(axis=(1, 2))
  assert (cars == 0).any() and np.ptp(cars) > 300
  assert len({label.tobytes() for label in labels}) == len(labels)


def _flat_fraction(images):
  """The fraction of pixels equal to their right neighbour (all channels)."""
  return np.mean(np.all(images[:, :, 1:] == images[:, :, :-1], axis=-1))


def _within_class_spread(images, labels, cls):
  """Mean over images of the median absolute deviation of the class's pixel colours."""
  spreads = []
  for image, label in zip(images, labels[..., 0]):
    pixels = image[label == cls].astype(np.float64)
    if len(pixels) > 50:
      spreads.append(np.median(np.abs(pixels - np.median(pixels, axis=0)), axis=0).mean())
  return np.mean(spreads)


def test_styles_differ_but_label_statistics_match(built):
  synthetic_images, synthetic_labels = built['scenes_synthetic'][1]['train']
  real_images, real_labels = built['scenes_real'][1]['train']
  # Source: flat colours, sharp edges; target: texture, noise and blur everywhere.
  flat_synthetic, flat_real = _flat_fraction(synthetic_images), _flat_fraction(real_images)
  assert flat_synthetic > 0.8 and flat_real < 0.1, (flat_synthetic, flat_real)
  for cls in (scenes.ROAD, scenes.SKY, scenes.VEGETATION):
    spread_synthetic = _within_class_spread(synthetic_images[:100], synthetic_labels[:100], cls)
    spread_real = _within_class_spread(real_images[:100], real_labels[:100], cls)
    assert spread_real > 2 * spread_synthetic + 2, (
        scenes.CLASS_NAMES[cls], spread_synthetic, spread_real)
  # Same layout distribution: class frequencies agree closely.
  def frequencies(labels):
    counts = np.bincount(labels.ravel(), minlength=256)[:scenes.NUM_CLASSES]
    return counts / counts.sum()
  np.testing.assert_allclose(frequencies(synthetic_labels), frequencies(real_labels), atol=0.03)


def test_generation_time_printed():
  for style in scenes.STYLES:
    start = time.perf_counter()
    for i in range(100):
      scenes.render_scene(scenes.example_rng(1, 'train', i), style)
    per_image = (time.perf_counter() - start) / 100
    print(f'{style}: {per_image * 1e3:.1f} ms per scene; '
          f'{per_image * (scenes.NUM_TRAIN + scenes.NUM_TEST):.1f} s for a domain (rendering only)')
