"""Pair registry and resolution: the names others use, and the errors users see."""

import importlib

import pytest

from cycada_tf.data import domains
from cycada_tf.data import pairs
from cycada_tf.errors import UserError
from tests.conftest import image_folder


def test_registry_matches_the_spec():
  expected = {
      'svhn_mnist': ('svhn_cropped', 'mnist', (32, 32, 3), False),
      'mnist_usps': ('mnist', 'usps', (28, 28, 1), False),
      'usps_mnist': ('usps', 'mnist', (28, 28, 1), False),
      'uci_mnist': ('uci_digits', 'mnist_sample', (28, 28, 1), True),
      'mnist_uci': ('mnist_sample', 'uci_digits', (28, 28, 1), True),
      'gta5_cityscapes': ('gta5', 'cityscapes', (None, None, 3), False),
      'synthia_fall_winter': ('synthia_fall', 'synthia_winter', (None, None, 3), False),
      'scenes_synthetic_real': ('scenes_synthetic', 'scenes_real', (None, None, 3), True),
  }
  assert set(pairs.PAIRS) == set(expected)
  for name, (source, target, shape, offline) in expected.items():
    pair = pairs.resolve_pair(name)
    assert (pair.name, pair.source, pair.target, pair.image_shape, pair.offline) == (
        name, source, target, shape, offline)
    assert pair.config == name and pair.description
    assert pair.is_segmentation == (shape[0] is None)


def _config_of(pair):
  return importlib.import_module(f'configs.{pair.config}').get_config()


def test_every_pair_config_module_exists():
  for pair in pairs.PAIRS.values():
    assert _config_of(pair) is not None


def test_pixel_loss_weights_follow_the_paper_and_release():
  """Digits: the release's 2·GAN(S→T) + 1·GAN(T→S) + 1·cycle (the paper weights every loss
  equally: GAN 1 / 1, cycle 1). Segmentation: CycleGAN's GAN 1 / 1 and cycle 10, as the paper's
  segmentation appendix follows CycleGAN. No identity term anywhere (the release's
  `--lambda_identity 0`)."""
  for pair in pairs.PAIRS.values():
    section = _config_of(pair).pixel
    weights = (section.gan_weight_st, section.gan_weight_ts, section.cycle_weight,
               section.identity_weight)
    assert weights == ((1.0, 1.0, 10.0, 0.0) if pair.is_segmentation else (2.0, 1.0, 1.0, 0.0)), (
        pair.name)


def test_digit_generators_have_the_release_width():
  """The release's CycleGAN generators have 64 filters (`ngf=64`); the offline pairs once halved
  them for compute (docs/results/uci_mnist.md). Only the offline scene pair, whose whole config
  is scaled down, keeps a narrower net."""
  for pair in pairs.PAIRS.values():
    if not pair.is_segmentation:
      assert _config_of(pair).model.generator_filters == 64, pair.name


def test_custom_segmentation_pair():
  pair = pairs.resolve_pair(None, source='seg_folder:/data/a', target='scenes_real')
  assert pair.is_segmentation and pair.config == 'segmentation'
  with pytest.raises(UserError, match='not both segmentation'):
    pairs.resolve_pair(None, source='seg_folder:/data/a', target='mnist')


def test_custom_pair():
  pair = pairs.resolve_pair(None, source='uci_digits', target='folder:/data/x',
                            image_shape=(32, 32, 3))
  assert pair.name == 'custom:uci_digits__folder:/data/x'
  assert (pair.config, pair.image_shape, pair.offline) == ('base', (32, 32, 3), True)
  assert not pairs.resolve_pair(None, 'mnist', 'uci_digits', (28, 28, 1)).offline


@pytest.mark.parametrize('kwargs, pattern', [
    (dict(dataset='svhn_usps'), r"unknown dataset 'svhn_usps'.*svhn_mnist, mnist_usps"),
    (dict(dataset='uci_mnist', source='mnist'), 'not both'),
    (dict(dataset=None, source='mnist'), '--source=SPEC and --target=SPEC'),
    (dict(dataset=None, source='mnist', target='cifar', image_shape=(28, 28, 1)),
     r"unknown domain 'cifar'.*mnist, svhn_cropped, usps, uci_digits, mnist_sample.*folder:PATH"),
    (dict(dataset=None, source='mnist', target='usps'), '--image_size'),
    (dict(dataset=None, source='mnist', target='usps', image_shape=(28, 28, 2)),
     'invalid image shape'),
])
def test_resolution_errors(kwargs, pattern):
  with pytest.raises(UserError, match=pattern):
    pairs.resolve_pair(**kwargs)


def _info(spec, class_names):
  return domains.DomainInfo(spec=spec, num_examples={'train': 1, 'test': 1},
                            num_classes=len(class_names), class_names=tuple(class_names))


def test_check_compatible_names_both_class_lists():
  pairs.check_compatible(_info('a', ['cat', 'dog']), _info('b', ['cat', 'dog']))
  with pytest.raises(UserError) as raised:
    pairs.check_compatible(_info('folder:/a', ['cat', 'dog']), _info('folder:/b', ['cat', 'cow']))
  message = str(raised.value)
  assert "['cat', 'dog']" in message and "['cat', 'cow']" in message
  assert 'folder:/a' in message and 'folder:/b' in message


def test_check_compatible_on_real_folders(tmp_path):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  for root, classes in (('a', ('cat', 'dog')), ('b', ('cat', 'emu'))):
    for name in classes:
      path = tmp_path / root / 'train' / name / 'x.png'
      path.parent.mkdir(parents=True)
      Image.new('L', (4, 4)).save(path)
  source = domains.domain_info(f'folder:{tmp_path / "a"}')
  target = domains.domain_info(f'folder:{tmp_path / "b"}')
  with pytest.raises(UserError, match='emu'):
    pairs.check_compatible(source, target)


def test_custom_image_shape_from_flags_else_the_first_folder_else_the_default(tmp_path):
  """What train.main and train.inspect give a custom pair (each passes the flags given, None
  for the others): a flag wins for its own dimension, the first folder domain's images (source
  before target) decide the rest, with a note to print; a pair of catalog domains keeps the
  config's shape, silently."""
  rgb_12 = image_folder(tmp_path / 'a', per_class=1, size=12, mode='RGB', splits=('train',))
  grey_20 = image_folder(tmp_path / 'b', per_class=1, size=20, mode='L', splits=('train',))
  default = (28, 28, 1)

  def shape(source, target, image_size=None, channels=None):
    return pairs.custom_image_shape(source, target, image_size, channels, default=default)

  for source, target, expected in ((rgb_12, grey_20, (12, 12, 3)),
                                   (grey_20, rgb_12, (20, 20, 1)),
                                   ('mnist', rgb_12, (12, 12, 3))):
    inferred, note = shape(source, target)
    assert inferred == expected
    folder = source if source.startswith('folder:') else target
    assert note.startswith(f'image shape {expected} inferred from the train images of {folder}')
  size_only, note = shape(rgb_12, grey_20, image_size=16)
  assert size_only == (16, 16, 3) and '(16, 16, 3) inferred' in note
  channels_only, note = shape(rgb_12, grey_20, channels=1)
  assert channels_only == (12, 12, 1) and '(12, 12, 1) inferred' in note
  assert shape(rgb_12, grey_20, image_size=16, channels=1) == ((16, 16, 1), None)
  assert shape('uci_digits', 'mnist_sample') == (default, None)
  assert shape('uci_digits', 'mnist_sample', channels=3) == ((28, 28, 3), None)


def test_digit_pixel_batch_is_the_paper_and_release_batch():
  """The paper and the release train the digit pixel stage on batches of 100; the offline pairs
  had 64 from the project's first skeleton until the pixel-batch section of
  docs/results/uci_mnist.md."""
  for pair in pairs.PAIRS.values():
    if not pair.is_segmentation:
      assert _config_of(pair).pixel.batch_size == 100, pair.name


def test_digit_supervised_stages_train_as_the_release():
  """The release's train_task_net: Adam 1e-4 (β 0.9, 0.999), batch 128, 100 epochs, for f_S, the
  oracle and the task network alike; the offline pairs had Adam 1e-3 for 20 epochs until the
  section on it in docs/results/uci_mnist.md."""
  for pair in pairs.PAIRS.values():
    if not pair.is_segmentation:
      config = _config_of(pair)
      for stage in (config.source, config.target_only, config.task):
        assert (stage.epochs, stage.batch_size, stage.learning_rate) == (100, 128, 1e-4), pair.name
        assert (stage.beta_1, stage.beta_2) == (0.9, 0.999), pair.name
