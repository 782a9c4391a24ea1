"""Segmentation domains: the label mappings, the GTA5 and SYNTHIA builders on tiny files in each
dataset's published layout, Cityscapes through the domain layer under mock_data, the
missing-manual-files errors, seg_folder domains, and the generated scenes."""

import os
import re

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from cycada_tf.data import domains
from cycada_tf.data import segmentation_labels as seg
from cycada_tf.data.builders.gta5 import gta5_dataset_builder as gta5_builder
from cycada_tf.data.builders.synthia import synthia_dataset_builder as synthia_builder
from cycada_tf.errors import UserError

# docs/method.md §4, written out independently of the module under test.
SPEC_CITYSCAPES = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
                   24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
# SYNTHIA-SEQS README ids of the paper's 13 classes, in the paper's column order.
PAPER_SYNTHIA = {1: 'sky', 2: 'building', 3: 'road', 4: 'sidewalk', 5: 'fence', 6: 'vegetation',
                 7: 'pole', 8: 'car', 9: 'traffic sign', 10: 'pedestrian', 11: 'bicycle',
                 12: 'lanemarking', 15: 'traffic light'}
H, W = 8, 12


def _collect(dataset):
  return list(dataset.as_numpy_iterator())


@pytest.fixture
def no_build(monkeypatch):
  """Fail if anything tries to build: the manual-files check must come first."""
  def must_not_run(self, *args, **kwargs):
    raise AssertionError('download_and_prepare ran although the manual files are missing')
  monkeypatch.setattr(tfds.core.DatasetBuilder, 'download_and_prepare', must_not_run)


# --- Label mappings ----------------------------------------------------------------------------


def test_cityscapes_mapping_matches_spec_and_ignores_the_rest():
  assert len(seg.CITYSCAPES_CLASSES) == 19
  assert seg.CITYSCAPES_CLASSES[0] == 'road' and seg.CITYSCAPES_CLASSES[18] == 'bicycle'
  raw = tf.constant(np.arange(256, dtype=np.uint8).reshape(16, 16))
  mapped = seg.map_labels(raw, seg.CITYSCAPES_LOOKUP)
  assert mapped.dtype == tf.uint8 and mapped.shape == (16, 16)
  mapped = mapped.numpy().ravel()
  for label_id in range(256):
    assert mapped[label_id] == SPEC_CITYSCAPES.get(label_id, 255), label_id
  np.testing.assert_array_equal(seg.map_labels_np(np.arange(256, dtype=np.uint8),
                                                  seg.CITYSCAPES_LOOKUP), mapped)


def test_synthia_mapping_is_the_papers_13_classes():
  assert seg.SYNTHIA_CLASSES == tuple(PAPER_SYNTHIA.values())
  ids = np.arange(300, dtype=np.uint16)  # 16-bit label files: ids above 255 are void too
  mapped = seg.map_labels_np(ids, seg.SYNTHIA_LOOKUP)
  assert mapped.dtype == np.uint8
  for label_id in range(300):
    name = PAPER_SYNTHIA.get(label_id)
    expected = seg.SYNTHIA_CLASSES.index(name) if name else 255
    assert mapped[label_id] == expected, label_id
  np.testing.assert_array_equal(
      seg.map_labels(tf.constant(ids[:256].astype(np.uint8)), seg.SYNTHIA_LOOKUP).numpy(),
      mapped[:256])


# --- GTA5: images/*.png + palette labels/*.png --------------------------------------------------

# Cityscapes labelIds in a GTA5 label and what they must become.
GTA5_IDS = np.array([7, 8, 26, 33, 0, 34], np.uint8)  # road sidewalk car bicycle void unknown
GTA5_TRAIN = np.array([0, 1, 13, 18, 255, 255], np.uint8)


def _palette_label(path, ids, size=(W, H)):
  """A GTA5-style label: mode P, index = labelId, with a colour palette."""
  width, height = size
  indices = np.resize(ids, height * width).reshape(height, width).astype(np.uint8)
  image = Image.fromarray(indices, mode='P')
  image.putpalette([(i * 37) % 256 for i in range(768)])
  path.parent.mkdir(parents=True, exist_ok=True)
  image.save(path)
  return indices


def _rgb_png(path, value, size=(W, H)):
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.new('RGB', size, (value, 255 - value, 9)).save(path)


def _gta5_manual(manual, stems, split_mat=None, odd_size=None):
  """GTA5 layout as the zips unpack; returns {stem: raw label ids}."""
  raw = {}
  for i, stem in enumerate(stems):
    rolled = np.roll(GTA5_IDS, i)
    raw[stem] = _palette_label(manual / 'labels' / f'{stem}.png', rolled)
    size = (W + 4, H + 2) if stem == odd_size else (W, H)
    _rgb_png(manual / 'images' / f'{stem}.png', 10 * i, size)
  if split_mat:
    from scipy import io as scipy_io  # pylint: disable=g-import-not-at-top
    scipy_io.savemat(manual / 'split.mat', {k: np.array(v, np.float64).reshape(-1, 1)
                                            for k, v in split_mat.items()})
  return raw


def _expected(raw, lookup):
  return seg.map_labels_np(raw, lookup)


def test_gta5_builder_maps_labels_and_holds_out_every_50th(tmp_path):
  manual = tmp_path / 'manual'
  raw = _gta5_manual(manual, ['00049', '00050', '00051', '00100'], odd_size='00051')
  builder = gta5_builder.Gta5(data_dir=str(tmp_path / 'tfds'))
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=str(manual)))

  info = domains.domain_info('gta5', str(tmp_path / 'tfds'))
  assert info.task == 'segmentation' and info.ignore_label == 255
  assert info.class_names == seg.CITYSCAPES_CLASSES and info.num_classes == 19
  assert info.num_examples == {'train': 2, 'test': 2}
  for split, stems in (('train', ['00049', '00051']), ('test', ['00050', '00100'])):
    examples = _collect(domains.load_domain('gta5', split, str(tmp_path / 'tfds')))
    assert len(examples) == 2
    labels_by_image = {}
    for image, label in examples:
      assert image.dtype == np.uint8 and image.shape == (H, W, 3)  # 00051 resized to its label
      assert label.dtype == np.uint8 and label.shape == (H, W)
      labels_by_image[int(image[0, 0, 0])] = label
    for i, stem in enumerate(['00049', '00050', '00051', '00100']):
      if stem in stems:
        np.testing.assert_array_equal(labels_by_image[10 * i],
                                      _expected(raw[stem], seg.CITYSCAPES_LOOKUP))


def test_gta5_uses_official_split_mat_and_part_folders(tmp_path):
  manual = tmp_path / 'manual'
  # Each zip extracted into a folder of its own, plus read_mapping's split.mat.
  _gta5_manual(manual / '01_parts', ['00001', '00002', '00003'],
               split_mat={'trainIds': [1], 'valIds': [2], 'testIds': [3]})
  (manual / '01_parts' / 'split.mat').rename(manual / 'split.mat')
  builder = gta5_builder.Gta5(data_dir=str(tmp_path / 'tfds'))
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=str(manual)))
  assert domains.domain_info('gta5', str(tmp_path / 'tfds')).num_examples == {
      'train': 2, 'test': 1}
  (image, _), = _collect(domains.load_domain('gta5', 'test', str(tmp_path / 'tfds')))
  assert image[0, 0, 0] == 20  # 00003


def test_gta5_builds_from_the_default_manual_dir_through_the_domain_layer(tmp_path):
  _gta5_manual(tmp_path / 'downloads' / 'manual', ['00050', '00051'])
  info = domains.domain_info('gta5', str(tmp_path))
  assert info.num_examples == {'train': 1, 'test': 1}


def test_gta5_subset_without_test_images_says_why(tmp_path):
  _gta5_manual(tmp_path / 'downloads' / 'manual', ['00001', '00002'])
  with pytest.raises(UserError, match=r'none of the 2 images falls in the test split'):
    domains.domain_info('gta5', str(tmp_path))


def test_gta5_rgb_label_is_a_one_line_error_naming_the_file(tmp_path):
  manual = tmp_path / 'downloads' / 'manual'
  _gta5_manual(manual, ['00050', '00051'])
  _rgb_png(manual / 'labels' / '00051.png', 3)
  with pytest.raises(UserError, match=r'labels/00051\.png') as raised:
    domains.load_domain('gta5', 'train', str(tmp_path))
  assert '\n' not in str(raised.value)


# --- SYNTHIA-SEQS: RGB/Stereo_Left/Omni_F + 16-bit GT/LABELS/Stereo_Left/Omni_F ------------------

SYNTHIA_IDS = np.array([1, 3, 4, 8, 15, 0, 13, 12], np.uint16)


def _synthia_label(path, ids):
  """A SYNTHIA-style label: 16-bit, 3 channels, class id in the first, instance id in the second."""
  class_ids = np.resize(ids, H * W).reshape(H, W).astype(np.uint16)
  instance = np.full((H, W), 300, np.uint16)  # > 255: only readable as 16-bit
  label = np.stack([class_ids, instance, np.zeros_like(class_ids)], axis=-1)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(tf.io.encode_png(tf.constant(label)).numpy())
  return class_ids


def _synthia_manual(manual, season, sequence, frames, value):
  root = manual / f'SYNTHIA-SEQS-{sequence:02d}-{season}'
  raw = {}
  for i, frame in enumerate(frames):
    name = f'{frame:06d}.png'
    _rgb_png(root / 'RGB' / 'Stereo_Left' / 'Omni_F' / name, value + i)
    raw[value + i] = _synthia_label(root / 'GT' / 'LABELS' / 'Stereo_Left' / 'Omni_F' / name,
                                    np.roll(SYNTHIA_IDS, i))
    # Other cameras and views exist in the real archives and must be ignored.
    _rgb_png(root / 'RGB' / 'Stereo_Right' / 'Omni_F' / name, 250)
    _rgb_png(root / 'RGB' / 'Stereo_Left' / 'Omni_B' / name, 250)
  return raw


def test_synthia_builders_read_16_bit_labels_and_split_by_blocks(tmp_path):
  manual = tmp_path / 'manual'
  raw = _synthia_manual(manual, 'FALL', 1, [0, 1, 450], value=10)
  raw.update(_synthia_manual(manual, 'FALL', 4, [399, 400, 1000], value=20))
  _synthia_manual(manual, 'WINTER', 1, [0, 499, 500], value=100)
  config = tfds.download.DownloadConfig(manual_dir=str(manual))
  data_dir = str(tmp_path / 'tfds')
  for cls in (synthia_builder.SynthiaFall, synthia_builder.SynthiaWinter):
    cls(data_dir=data_dir).download_and_prepare(download_config=config)

  fall = domains.domain_info('synthia_fall', data_dir)
  assert fall.task == 'segmentation' and fall.class_names == seg.SYNTHIA_CLASSES
  assert fall.num_classes == 13
  # Test: frames 400-499, 900-999, ...; here 450 and 400.
  assert fall.num_examples == {'train': 4, 'test': 2}
  assert domains.domain_info('synthia_winter', data_dir).num_examples == {'train': 2, 'test': 1}
  seen = set()
  for split, test in (('train', False), ('test', True)):
    for image, label in _collect(domains.load_domain('synthia_fall', split, data_dir)):
      key = int(image[0, 0, 0])
      seen.add(key)
      assert key in (12, 21) if test else key in (10, 11, 20, 22)
      assert label.dtype == np.uint8 and label.shape == (H, W)
      np.testing.assert_array_equal(label, _expected(raw[key], seg.SYNTHIA_LOOKUP))
  assert seen == set(raw)
  # The mapping really happened: 3 (road) → 2, 15 (traffic light) → 12, 0 and 13 → void.
  first = _expected(raw[10], seg.SYNTHIA_LOOKUP).ravel()[:8]
  np.testing.assert_array_equal(first, [0, 2, 3, 7, 12, 255, 255, 11])


# --- Cityscapes (TFDS's builder) through the domain layer ----------------------------------------


def test_cityscapes_maps_label_ids_and_test_reads_validation(tmp_path, monkeypatch):
  # mock_data points every builder at a fixed non-existent data_dir, where the zips cannot be:
  # pretend they are there (the check itself is tested below).
  checked = []
  monkeypatch.setattr(domains, '_manual_problem', lambda name, manual: checked.append(name))
  requested = []
  original = tfds.core.DatasetBuilder.as_dataset

  def spy(self, *args, split=None, **kwargs):
    requested.append(split)
    return original(self, *args, split=split, **kwargs)

  monkeypatch.setattr(tfds.core.DatasetBuilder, 'as_dataset', spy)
  with tfds.testing.mock_data(num_examples=2, policy=tfds.testing.MockPolicy.USE_CODE):
    info = domains.domain_info('cityscapes', str(tmp_path))
    examples = _collect(domains.load_domain('cityscapes', 'test', str(tmp_path)))
    raw = _collect(tfds.builder('cityscapes/semantic_segmentation', data_dir=str(tmp_path))
                   .as_dataset(split='validation'))
  assert info.task == 'segmentation' and info.class_names == seg.CITYSCAPES_CLASSES
  assert requested[0] == 'validation' and checked[0] == 'cityscapes'
  assert len(examples) == 2
  for (image, label), example in zip(examples, raw):
    assert image.shape == (1024, 2048, 3) and image.dtype == np.uint8
    assert label.shape == (1024, 2048) and label.dtype == np.uint8
    np.testing.assert_array_equal(image, example['image_left'])
    np.testing.assert_array_equal(
        label, _expected(example['segmentation_label'][..., 0], seg.CITYSCAPES_LOOKUP))
    assert set(np.unique(label)) <= set(range(19)) | {255}


# --- Missing manual files: one line, names the files and the place, nothing slow first ----------


@pytest.mark.parametrize('name, expected', [
    ('cityscapes', [r'leftImg8bit_trainvaltest\.zip', r'gtFine_trainvaltest\.zip',
                    'cityscapes-dataset.com']),
    ('gta5', [r'images/\*\.png', r'labels/\*\.png', r'01_images\.zip',
              r'download\.visinf\.tu-darmstadt\.de']),
    ('synthia_fall', [r'SYNTHIA-SEQS-<NN>-FALL/RGB/Stereo_Left/Omni_F/\*\.png',
                      r'GT/LABELS/Stereo_Left/Omni_F', 'synthia-dataset.net']),
    ('synthia_winter', [r'SYNTHIA-SEQS-<NN>-WINTER']),
])
def test_missing_manual_files_are_one_line_errors(name, expected, tmp_path, no_build):
  with pytest.raises(UserError) as raised:
    domains.domain_info(name, str(tmp_path))
  message = str(raised.value)
  assert '\n' not in message and f"'{name}'" in message
  assert os.path.join(str(tmp_path), 'downloads', 'manual') in message
  for pattern in expected:
    assert re.search(pattern, message), (pattern, message)


def test_gta5_image_without_label_names_the_file(tmp_path, no_build):
  manual = tmp_path / 'downloads' / 'manual'
  _gta5_manual(manual, ['00001', '00002'])
  (manual / 'labels' / '00002.png').unlink()
  with pytest.raises(UserError, match=r'images/00002\.png') as raised:
    domains.load_domain('gta5', 'train', str(tmp_path))
  assert '\n' not in str(raised.value)


def test_synthia_missing_label_dir_is_named(tmp_path, no_build):
  manual = tmp_path / 'downloads' / 'manual'
  _rgb_png(manual / 'SYNTHIA-SEQS-02-FALL' / 'RGB' / 'Stereo_Left' / 'Omni_F' / '000000.png', 1)
  with pytest.raises(UserError, match=r'SYNTHIA-SEQS-02-FALL/GT/LABELS/Stereo_Left/Omni_F'):
    domains.domain_info('synthia_fall', str(tmp_path))


# --- seg_folder:PATH ----------------------------------------------------------------------------


def _grey_label(path, values, size=(W, H)):
  width, height = size
  array = np.resize(np.asarray(values, np.uint8), height * width).reshape(height, width)
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(array, mode='L').save(path)
  return array


@pytest.fixture
def seg_folder(tmp_path):
  root = tmp_path / 'streets'
  labels = {}
  _rgb_png(root / 'train' / 'images' / 'a.png', 10)
  labels['a'] = _grey_label(root / 'train' / 'labels' / 'a.png', [0, 1, 255])
  path = root / 'train' / 'images' / 'b.jpg'
  Image.new('L', (W + 2, H + 1), 77).save(path)  # grey JPEG: decoded to 3 channels
  labels['b'] = _grey_label(root / 'train' / 'labels' / 'b.png', [3, 0], size=(W + 2, H + 1))
  _rgb_png(root / 'test' / 'images' / 'c.png', 30)
  labels['c'] = _grey_label(root / 'test' / 'labels' / 'c.png', [2])
  (root / 'train' / 'images' / 'notes.txt').write_text('not an image')
  return root, labels


def test_seg_folder_loads_pairs_and_counts_classes(seg_folder):
  root, labels = seg_folder
  spec = f'seg_folder:{root}'
  domains.validate_spec(spec)
  assert domains.is_offline(spec) and domains.is_segmentation(spec)
  info = domains.domain_info(spec)
  assert info.task == 'segmentation' and info.num_examples == {'train': 2, 'test': 1}
  # No classes.txt: max train id (3) + 1, named class_0...
  assert info.class_names == ('class_0', 'class_1', 'class_2', 'class_3')
  examples = _collect(domains.load_domain(spec, 'train'))
  assert [image.shape for image, _ in examples] == [(H, W, 3), (H + 1, W + 2, 3)]
  assert all(image.dtype == np.uint8 for image, _ in examples)
  np.testing.assert_array_equal(examples[0][1], labels['a'])
  np.testing.assert_array_equal(examples[1][1], labels['b'])
  assert examples[1][1].dtype == np.uint8 and (examples[1][0] == 77).all()
  (root / 'classes.txt').write_text('road\ncar\n\nsky\nperson\nsign\n')
  assert domains.domain_info(spec).class_names == ('road', 'car', 'sky', 'person', 'sign')


def test_seg_folder_missing_label(seg_folder):
  root, _ = seg_folder
  (root / 'train' / 'labels' / 'b.png').unlink()
  with pytest.raises(UserError, match=r'images/b\.jpg has no label') as raised:
    domains.load_domain(f'seg_folder:{root}', 'train')
  assert '\n' not in str(raised.value)


def test_seg_folder_extra_label(seg_folder):
  root, _ = seg_folder
  _grey_label(root / 'test' / 'labels' / 'z.png', [1])
  with pytest.raises(UserError, match=r'labels/z\.png has no image'):
    domains.domain_info(f'seg_folder:{root}')


def test_seg_folder_size_mismatch(seg_folder):
  root, _ = seg_folder
  _grey_label(root / 'test' / 'labels' / 'c.png', [1], size=(W, H + 3))
  with pytest.raises(UserError, match=r'labels/c\.png is 12x11 but its image .*c\.png is 12x8'):
    domains.load_domain(f'seg_folder:{root}', 'test')


@pytest.mark.parametrize('mode', ['RGB', 'P', 'RGBA'])
def test_seg_folder_colour_label_is_an_error(seg_folder, mode):
  root, _ = seg_folder
  path = root / 'test' / 'labels' / 'c.png'
  if mode == 'P':
    _palette_label(path, [1, 2])
  else:
    Image.new(mode, (W, H), (1, 1, 1) if mode == 'RGB' else (1, 1, 1, 255)).save(path)
  with pytest.raises(UserError, match=r'labels/c\.png is an? .*PNG, not a single-channel') as r:
    domains.load_domain(f'seg_folder:{root}', 'test')
  assert '\n' not in str(r.value)


def test_seg_folder_missing_split_and_folder(seg_folder):
  root, _ = seg_folder
  spec = f'seg_folder:{root}'
  for path in sorted((root / 'test').rglob('*'), reverse=True):
    path.unlink() if path.is_file() else path.rmdir()
  (root / 'test').rmdir()
  assert domains.domain_info(spec).num_examples == {'train': 2, 'test': 0}
  with pytest.raises(UserError, match='test does not exist'):
    domains.load_domain(spec, 'test')
  with pytest.raises(UserError, match='nowhere does not exist'):
    domains.domain_info(f'seg_folder:{root / "nowhere"}')


# --- The catalog and the classification defaults -------------------------------------------------


def test_catalog_and_task_flags():
  for name in ('cityscapes', 'gta5', 'synthia_fall', 'synthia_winter', 'scenes_synthetic',
               'scenes_real'):
    domains.validate_spec(name)
    assert domains.is_segmentation(name)
  for name in ('mnist', 'usps', 'uci_digits', 'folder:/x'):
    assert not domains.is_segmentation(name)
  assert domains.is_offline('scenes_synthetic') and domains.is_offline('scenes_real')
  assert not any(domains.is_offline(n) for n in ('cityscapes', 'gta5', 'synthia_fall'))
  info = domains.DomainInfo(spec='x', num_examples={}, num_classes=10, class_names=())
  assert info.task == 'classification' and info.ignore_label == 255 and not info.is_segmentation
  with pytest.raises(UserError, match='seg_folder:PATH'):
    domains.validate_spec('seg_folder:')


# --- Generated scenes (offline, built on demand) -------------------------------------------------


@pytest.mark.parametrize('name', ['scenes_synthetic', 'scenes_real'])
def test_scene_domains_build_offline(name, tmp_path, monkeypatch):
  scenes = pytest.importorskip('cycada_tf.data.builders.scenes.scenes_dataset_builder')
  monkeypatch.setattr(domains, '_host_reachable', lambda host: (False, 'offline'))
  # A few scenes instead of 1,200: generation is what takes time, not the domain layer.
  for cls in (scenes.ScenesSynthetic, scenes.ScenesReal):
    monkeypatch.setattr(cls, 'SPLITS', {'train': 6, 'test': 3}, raising=False)
  info = domains.domain_info(name, str(tmp_path))
  assert info.task == 'segmentation' and info.class_names == tuple(scenes.CLASS_NAMES)
  assert info.num_classes == 8 and info.num_examples['train'] > 0
  assert info.num_examples['test'] > 0
  image, label = next(domains.load_domain(name, 'test', str(tmp_path)).as_numpy_iterator())
  assert image.shape == tuple(scenes.IMAGE_SHAPE) and image.dtype == np.uint8
  assert label.shape == tuple(scenes.IMAGE_SHAPE[:2]) and label.dtype == np.uint8
  assert set(np.unique(label)) <= set(range(8)) | {255}


def test_seg_folder_is_checked_whole_before_training(seg_folder):
  # A bad test label fails at the start, not at the first evaluation after training; an id the
  # class list does not have is named with its file.
  root, _ = seg_folder
  spec = f'seg_folder:{root}'
  domains.check_seg_folder(spec)  # the fixture is valid
  _grey_label(root / 'test' / 'labels' / 'c.png', [1], size=(W, H + 3))
  with pytest.raises(UserError, match=r'labels/c\.png is 12x11'):
    domains.check_seg_folder(spec)
  _grey_label(root / 'test' / 'labels' / 'c.png', [7])
  (root / 'classes.txt').write_text('road\ncar\nsky\nperson\n')
  with pytest.raises(UserError, match=r'labels/c\.png has class id 7, but .* has 4 classes'):
    domains.check_seg_folder(spec)
