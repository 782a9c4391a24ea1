"""Domains: TFDS builders (mocked, parsed from real-format files, and the bundled offline data),
folder domains, and the offline error path."""

import gzip
import os
import time

import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

from cycada_tf.data import domains
from cycada_tf.data.builders.usps import usps_dataset_builder
from cycada_tf.errors import UserError


def _collect(dataset):
  images, labels = zip(*dataset.as_numpy_iterator())
  return images, np.array(labels)


@pytest.fixture
def reachable(monkeypatch):
  """Pretend the download host answers, so mocked or monkeypatched downloads run."""
  monkeypatch.setattr(domains, '_host_reachable', lambda host: (True, ''))


@pytest.fixture
def unreachable(monkeypatch):
  """Fail the network probe, so a test proves that no download was needed."""
  monkeypatch.setattr(domains, '_host_reachable', lambda host: (False, f'cannot reach {host}'))


# --- TFDS catalog and USPS builders under tfds.testing.mock_data ------------------------------


@pytest.mark.parametrize('name, shape', [('mnist', (28, 28, 1)), ('svhn_cropped', (32, 32, 3)),
                                         ('usps', (16, 16, 1))])
def test_tfds_domains_under_mock_data(name, shape, tmp_path, reachable):
  with tfds.testing.mock_data(num_examples=6, policy=tfds.testing.MockPolicy.USE_CODE):
    images, labels = _collect(domains.load_domain(name, 'train', data_dir=str(tmp_path)))
  assert len(images) == 6
  assert all(image.shape == shape and image.dtype == np.uint8 for image in images)
  assert labels.dtype == np.int64 and set(labels) <= set(range(10))


# --- USPS parser on files in Hastie's format ---------------------------------------------------


def _usps_lines(rng, count):
  """Rows like Hastie's: a float label, then 256 values in [-1, 1] with 4 decimals."""
  labels = rng.integers(0, 10, size=count)
  values = np.round(rng.uniform(-1, 1, size=(count, 256)), 4)
  values[:, 0], values[:, 1] = -1.0, 1.0  # Pin the extremes of the mapping.
  lines = [' '.join([f'{label:.4f}'] + [f'{v:.4f}' for v in row])
           for label, row in zip(labels, values)]
  return '\n'.join(lines) + '\n', labels, values


def test_usps_parser_maps_values_and_labels():
  text, labels, values = _usps_lines(np.random.default_rng(0), 3)
  images, parsed = usps_dataset_builder.parse(text)
  assert images.shape == (3, 16, 16, 1) and images.dtype == np.uint8
  np.testing.assert_array_equal(parsed, labels)
  expected = np.round((values + 1) / 2 * 255).astype(np.uint8).reshape(3, 16, 16, 1)
  np.testing.assert_array_equal(images, expected)
  assert images[0, 0, 0, 0] == 0 and images[0, 0, 1, 0] == 255


def test_usps_parser_rejects_short_rows():
  with pytest.raises(ValueError, match='expected 257'):
    usps_dataset_builder.parse('3.0000 0.5 0.5\n', name='zip.train')


def test_usps_builds_from_manual_dir_gz_and_plain(tmp_path, unreachable):
  rng = np.random.default_rng(1)
  train_text, train_labels, train_values = _usps_lines(rng, 7)
  test_text, test_labels, _ = _usps_lines(rng, 4)
  manual = tmp_path / 'downloads' / 'manual'
  manual.mkdir(parents=True)
  (manual / 'zip.train.gz').write_bytes(gzip.compress(train_text.encode()))
  (manual / 'zip.test').write_text(test_text)

  info = domains.domain_info('usps', str(tmp_path))
  assert info.num_examples == {'train': 7, 'test': 4}
  images, labels = _collect(domains.load_domain('usps', 'train', str(tmp_path)))
  _, test_labels_read = _collect(domains.load_domain('usps', 'test', str(tmp_path)))
  # TFDS stores examples in a hashed order; compare as multisets, then match image to label.
  assert sorted(labels) == sorted(train_labels) and sorted(test_labels_read) == sorted(test_labels)
  expected = np.round((train_values + 1) / 2 * 255).astype(np.uint8).reshape(-1, 16, 16, 1)
  for image, label in zip(images, labels):
    matches = [i for i in range(7) if np.array_equal(expected[i], image)]
    assert matches and train_labels[matches[0]] == label


# --- Offline builders on the real bundled data -------------------------------------------------


@pytest.mark.parametrize('name, counts, shape', [
    ('uci_digits', {'train': 1437, 'test': 360}, (8, 8, 1)),
    ('mnist_sample', {'train': 4000, 'test': 1000}, (28, 28, 1)),
])
def test_offline_builders_exact_counts_and_balance(name, counts, shape, offline_data_dir):
  info = domains.domain_info(name, offline_data_dir)
  assert info.num_examples == counts
  assert info.class_names == tuple('0123456789') and info.num_classes == 10
  for split, count in counts.items():
    images, labels = _collect(domains.load_domain(name, split, offline_data_dir))
    stacked = np.stack(images)
    assert stacked.shape == (count, *shape) and stacked.dtype == np.uint8
    assert stacked.min() == 0 and stacked.max() == 255
    assert labels.dtype == np.int64
    if split == 'test':
      per_class = np.bincount(labels, minlength=10)
      assert np.abs(per_class - count / 10).max() <= 1, per_class


def test_offline_builders_are_deterministic(offline_data_dir):
  first = _collect(domains.load_domain('uci_digits', 'test', offline_data_dir))[1]
  second = _collect(domains.load_domain('uci_digits', 'test', offline_data_dir))[1]
  np.testing.assert_array_equal(first, second)


def test_uci_content_fraction(offline_data_dir):
  assert domains.domain_info('uci_digits', offline_data_dir).content_fraction == pytest.approx(
      20 / 28)
  assert domains.domain_info('mnist_sample', offline_data_dir).content_fraction == 1.0


# --- Offline error for downloadable datasets ---------------------------------------------------


def test_unprepared_catalog_dataset_with_failing_download(tmp_path, reachable, monkeypatch):
  def fail(self, *args, **kwargs):
    raise ConnectionError('Failed to resolve storage.googleapis.com')
  monkeypatch.setattr(tfds.core.DatasetBuilder, 'download_and_prepare', fail)
  with pytest.raises(UserError) as raised:
    domains.load_domain('mnist', 'train', data_dir=str(tmp_path))
  message = str(raised.value)
  assert "'mnist'" in message and str(tmp_path) in message
  assert 'ConnectionError' in message and 'uci_mnist' in message and '\n' not in message


def test_unreachable_host_fails_before_downloading(tmp_path, unreachable, monkeypatch):
  def must_not_run(self, *args, **kwargs):
    raise AssertionError('download attempted although the host is unreachable')
  monkeypatch.setattr(tfds.core.DatasetBuilder, 'download_and_prepare', must_not_run)
  with pytest.raises(UserError, match=r"'usps'.*zip\.train\.gz") as raised:
    domains.domain_info('usps', data_dir=str(tmp_path))
  assert os.path.join(str(tmp_path), 'downloads', 'manual') in str(raised.value)


def test_host_probe_fails_fast_for_unresolvable_host():
  start = time.monotonic()
  # pylint: disable-next=protected-access
  reachable, cause = domains._host_reachable('cycada-test.invalid', timeout=3.0)
  assert not reachable and 'cycada-test.invalid' in cause
  assert time.monotonic() - start < 5


# --- Folder domains ----------------------------------------------------------------------------


def _write_png(path, size, mode, value):
  path.parent.mkdir(parents=True, exist_ok=True)
  colour = value if mode == 'L' else (value, 255 - value, 7)
  Image.new(mode, size, colour).save(path)


@pytest.fixture
def folder(tmp_path):
  """cat/dog images in mixed sizes and modes; test split has one image per class."""
  root = tmp_path / 'pets'
  _write_png(root / 'train' / 'cat' / 'a.png', (10, 12), 'L', 40)
  _write_png(root / 'train' / 'cat' / 'b.PNG', (30, 20), 'RGB', 90)
  _write_png(root / 'train' / 'dog' / 'c.png', (16, 16), 'RGB', 200)
  (root / 'train' / 'dog' / 'notes.txt').write_text('not an image')
  _write_png(root / 'test' / 'cat' / 'd.png', (8, 8), 'L', 10)
  _write_png(root / 'test' / 'dog' / 'e.png', (9, 9), 'RGB', 250)
  return root


def test_folder_domain_loads_mixed_images(folder):
  spec = f'folder:{folder}'
  info = domains.domain_info(spec)
  assert info.class_names == ('cat', 'dog') and info.num_classes == 2
  assert info.num_examples == {'train': 3, 'test': 2}
  images, labels = _collect(domains.load_domain(spec, 'train'))
  assert [image.shape for image in images] == [(12, 10, 3), (20, 30, 3), (16, 16, 3)]
  np.testing.assert_array_equal(labels, [0, 0, 1])
  assert (images[0] == 40).all()  # Grey replicated to 3 channels.
  np.testing.assert_array_equal(images[2][0, 0], [200, 55, 7])


def test_corrupt_folder_image_names_the_file(folder):
  bad = folder / 'train' / 'dog' / 'broken.png'
  bad.write_bytes(b'\x89PNG\r\n\x1a\n' + b'garbage' * 10)
  with pytest.raises(UserError, match='broken.png'):
    domains.load_domain(f'folder:{folder}', 'train')


def test_empty_or_missing_split_is_a_user_error(folder):
  for image in (folder / 'test').rglob('*.png'):
    image.unlink()
  with pytest.raises(UserError, match=f'{folder}/test'):
    domains.load_domain(f'folder:{folder}', 'test')
  with pytest.raises(UserError, match=f'{folder}/test does not exist'):
    (folder / 'test' / 'cat').rmdir()
    (folder / 'test' / 'dog').rmdir()
    (folder / 'test').rmdir()
    domains.load_domain(f'folder:{folder}', 'test')
  with pytest.raises(UserError, match='nowhere does not exist'):
    domains.load_domain(f'folder:{folder / "nowhere"}', 'train')


def test_unknown_spec_lists_catalog_and_folder_form():
  with pytest.raises(UserError, match=r'mnist_sample.*folder:PATH'):
    domains.domain_info('imagenet')
