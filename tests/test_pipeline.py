"""Preprocessing and batching: shapes, value range, seeding, and 2-replica distribution."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from cycada_tf.data import pipeline
from cycada_tf.errors import UserError

from tests.conftest import REPO as _REPO


def test_uci_digit_is_padded_like_mnist():
  white = np.full((8, 8, 1), 255, np.uint8)
  out = pipeline.preprocess(white, (28, 28, 1), content_fraction=20 / 28).numpy()
  assert out.shape == (28, 28, 1) and out.dtype == np.float32
  np.testing.assert_allclose(out[4:24, 4:24], 1.0, atol=1e-5)
  border = np.ones((28, 28), bool)
  border[4:24, 4:24] = False
  assert (out[..., 0][border] == -1.0).all()


def test_grey_to_rgb_and_back():
  grey = np.arange(64, dtype=np.uint8).reshape(8, 8, 1) * 4
  rgb = pipeline.preprocess(grey, (8, 8, 3)).numpy()
  assert rgb.shape == (8, 8, 3)
  np.testing.assert_allclose(rgb[..., 0], rgb[..., 2])
  np.testing.assert_allclose(rgb[..., 0], grey[..., 0] / 127.5 - 1, atol=1e-5)
  back = pipeline.preprocess(np.repeat(grey, 3, axis=-1), (8, 8, 1)).numpy()
  np.testing.assert_allclose(back[..., 0], grey[..., 0] / 127.5 - 1, atol=1e-2)


def test_range_and_resize():
  image = np.random.default_rng(0).integers(0, 256, size=(16, 16, 1)).astype(np.uint8)
  image[0, 0], image[0, 1] = 0, 255
  same = pipeline.preprocess(image, (16, 16, 1)).numpy()
  np.testing.assert_allclose(same, image / 127.5 - 1, atol=1e-4)
  assert same.min() == -1.0 and same.max() == pytest.approx(1.0)
  resized = pipeline.preprocess(image, (28, 28, 1)).numpy()
  assert resized.shape == (28, 28, 1) and -1 <= resized.min() and resized.max() <= 1


def test_domain_dataset_batches_and_seeded_shuffle(offline_data_dir):
  def shuffled(seed):
    return pipeline.domain_dataset('uci_digits', 'test', (28, 28, 1), batch_size=32,
                                   data_dir=offline_data_dir, shuffle=True, seed=seed)

  def first_labels(dataset):
    return next(iter(dataset))[1].numpy()

  dataset = shuffled(0)
  np.testing.assert_array_equal(first_labels(dataset), first_labels(shuffled(0)))
  assert not np.array_equal(first_labels(shuffled(0)), first_labels(shuffled(1)))
  # Reshuffled every epoch, but the same sequence of epochs for the same seed.
  epoch1 = np.concatenate([labels for _, labels in dataset.as_numpy_iterator()])
  epoch2 = np.concatenate([labels for _, labels in dataset.as_numpy_iterator()])
  assert len(epoch1) == 360 and not np.array_equal(epoch1, epoch2)
  np.testing.assert_array_equal(np.sort(epoch1), np.sort(epoch2))
  images, _ = next(iter(dataset))
  assert images.shape == (32, 28, 28, 1) and images.dtype == tf.float32


def test_domain_dataset_keeps_remainder_unless_dropped(offline_data_dir):
  kept = pipeline.domain_dataset('uci_digits', 'test', (28, 28, 1), batch_size=100,
                                 data_dir=offline_data_dir)
  dropped = pipeline.domain_dataset('uci_digits', 'test', (28, 28, 1), batch_size=100,
                                    data_dir=offline_data_dir, drop_remainder=True)
  assert [len(y) for _, y in kept.as_numpy_iterator()] == [100, 100, 100, 60]
  assert [len(y) for _, y in dropped.as_numpy_iterator()] == [100, 100, 100]


def test_paired_dataset_is_endless_and_seeds_differ(offline_data_dir):
  dataset = pipeline.paired_dataset('uci_digits', 'uci_digits', 'test', (28, 28, 3),
                                    batch_size=64, data_dir=offline_data_dir, seed=3)
  batches = list(dataset.take(8).as_numpy_iterator())  # 8 * 64 > 360: the stream repeats.
  (xs, ys), (xt, yt) = batches[0]
  assert xs.shape == xt.shape == (64, 28, 28, 3) and ys.shape == yt.shape == (64,)
  assert not np.array_equal(ys, yt)  # Same domain, different shuffle seeds.
  assert all(b[0][0].shape[0] == 64 for b in batches)


def test_steps_per_epoch():
  assert pipeline.steps_per_epoch(1437, 128) == 11
  assert pipeline.steps_per_epoch(10, 128) == 1
  with pytest.raises(UserError):
    pipeline.steps_per_epoch(10, 0)


_TWO_REPLICAS = textwrap.dedent('''
    import json, sys
    import tensorflow as tf
    cpus = tf.config.list_physical_devices('CPU')
    tf.config.set_logical_device_configuration(
        cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
    from cycada_tf.data import pipeline
    strategy = tf.distribute.MirroredStrategy(['/cpu:0', '/cpu:1'])
    def dataset_fn(input_context):
      return pipeline.paired_dataset('uci_digits', 'mnist_sample', 'train', (28, 28, 1),
                                     batch_size=8, data_dir=sys.argv[1],
                                     input_context=input_context)
    (xs, ys), (xt, yt) = next(iter(strategy.distribute_datasets_from_function(dataset_fn)))
    report = {
        'replicas': strategy.num_replicas_in_sync,
        'shapes': [list(t.shape) for t in strategy.experimental_local_results(xs)],
        'labels': [list(t.shape) for t in strategy.experimental_local_results(yt)],
        'min': min(float(tf.reduce_min(t)) for t in strategy.experimental_local_results(xt)),
        'max': max(float(tf.reduce_max(t)) for t in strategy.experimental_local_results(xt)),
    }
    print(json.dumps(report))
''')


@pytest.mark.slow
def test_two_cpu_replicas_each_get_half_the_global_batch(offline_data_dir):
  result = subprocess.run([sys.executable, '-c', _TWO_REPLICAS, offline_data_dir], cwd=_REPO,
                          capture_output=True, text=True, timeout=120, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(result.stdout.strip().splitlines()[-1])
  assert report['replicas'] == 2
  assert report['shapes'] == [[4, 28, 28, 1]] * 2 and report['labels'] == [[4]] * 2
  assert -1.0 <= report['min'] < report['max'] <= 1.0


def test_memo_preprocesses_each_example_once_across_epochs(offline_data_dir, monkeypatch):
  """A stage's epochs share one cache: epoch 2 reshuffles stored examples, decodes nothing."""
  calls = []
  original = pipeline.preprocess

  def counted(image, image_shape, content_fraction=1.0):
    out = original(image, image_shape, content_fraction)
    counted_out = tf.py_function(lambda x: calls.append(1) or x, [out], tf.float32)
    return tf.ensure_shape(counted_out, out.shape)

  monkeypatch.setattr(pipeline, 'preprocess', counted)
  strategy = tf.distribute.get_strategy()
  batch_size, num_examples = 100, 1437  # uci_digits train
  steps = num_examples // batch_size

  def epoch(memo, seed):
    """Reads one epoch as `trainer.fit` does: `steps` full batches, not to the end."""
    def dataset_fn(input_context):
      return pipeline.domain_dataset('uci_digits', 'train', (28, 28, 1), batch_size=batch_size,
                                     data_dir=offline_data_dir, shuffle=True, seed=seed,
                                     drop_remainder=True, input_context=input_context,
                                     memo=memo)
    iterator = iter(strategy.distribute_datasets_from_function(dataset_fn))
    return np.concatenate([next(iterator)[1].numpy() for _ in range(steps)])

  memo = {}
  first = epoch(memo, seed=1)
  assert len(calls) == num_examples
  second = epoch(memo, seed=2)
  assert len(calls) == num_examples  # served from the cache
  assert len(memo) == 1
  assert not np.array_equal(first, second)  # but reshuffled
  # Without a memo each epoch starts an empty cache and preprocesses everything again.
  epoch(None, seed=1)
  assert len(calls) == 2 * num_examples
