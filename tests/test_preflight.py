"""Checks before any work: model_dir, saved settings, and the data each stage will read."""

import os

import pytest

from configs import uci_mnist
from cycada_tf import preflight
from cycada_tf.data import pairs
from cycada_tf.errors import UserError
from tests.conftest import image_folder


def _custom(source, target):
  return pairs.resolve_pair(None, source, target, image_shape=(12, 12, 1))


def _config(batch=2):
  config = uci_mnist.get_config()
  for section in ('source', 'target_only', 'task'):
    config[section].batch_size = batch
  return config


def test_model_dir_that_is_a_file_or_under_a_file(tmp_path):
  path = tmp_path / 'file'
  path.write_text('x')
  with pytest.raises(UserError, match='is a file, not a directory'):
    preflight.check_model_dir(str(path))
  with pytest.raises(UserError, match='is not writable'):
    preflight.check_model_dir(str(path / 'run'))
  preflight.check_model_dir(str(tmp_path / 'new' / 'run'))  # created
  assert os.listdir(tmp_path / 'new' / 'run') == []  # the probe file is gone


def test_different_class_names_fail_naming_both_lists(tmp_path):
  pair = _custom(image_folder(str(tmp_path / 's'), ['cat', 'dog']),
                 image_folder(str(tmp_path / 't'), ['0', '1']))
  with pytest.raises(UserError, match=r"\['cat', 'dog'\] vs \['0', '1'\]"):
    preflight.check_data(_config(), pair, None, 'source')


def test_nine_against_ten_classes_fail(tmp_path):
  digits = [str(i) for i in range(10)]
  pair = _custom(image_folder(str(tmp_path / 's'), digits[:9], per_class=1),
                 image_folder(str(tmp_path / 't'), digits, per_class=1))
  with pytest.raises(UserError, match='different classes'):
    preflight.check_data(_config(batch=1), pair, None, 'all')


def test_class_count_comes_from_the_data_unless_given(tmp_path):
  names = [f'c{i:02d}' for i in range(12)]
  pair = _custom(image_folder(str(tmp_path / 's'), names, per_class=1),
                 image_folder(str(tmp_path / 't'), names, per_class=1))
  config = _config()
  preflight.check_data(config, pair, None, 'source')
  assert config.model.num_classes == 12
  config = _config()
  with pytest.raises(UserError, match='have 12 classes but --config.model.num_classes=10'):
    preflight.check_data(config, pair, None, 'source', explicit={'model.num_classes'})


def test_a_missing_test_split_fails_before_training(tmp_path):
  pair = _custom(image_folder(str(tmp_path / 's'), ['a', 'b'], splits=('train',)),
                 image_folder(str(tmp_path / 't'), ['a', 'b']))
  with pytest.raises(UserError, match=r'no test images.*Fix: add .*s/test/<class>/<image>'):
    preflight.check_data(_config(), pair, None, 'source')


def test_a_training_split_smaller_than_one_batch_names_the_fix(tmp_path):
  pair = _custom(image_folder(str(tmp_path / 's'), ['a', 'b']),  # 6 train images each
                 image_folder(str(tmp_path / 't'), ['a', 'b'], per_class=2))
  config = _config(batch=5)
  preflight.check_data(config, pair, None, 'source')  # 6 >= 5
  with pytest.raises(UserError, match=r'target_only reads 4 images, fewer than its batch_size 5'
                     r'.*--config.target_only.batch_size=4'):
    preflight.check_data(config, pair, None, 'all')
  preflight.check_data(config, pair, None, 'pixel')  # paired stages repeat the smaller domain


def test_saved_settings_are_restored_and_contradictions_refused(tmp_path):
  pair = pairs.PAIRS['uci_mnist']
  config = _config()
  config.model.generator_filters = 8
  config.source.epochs = 3
  preflight.save_settings(config, pair, str(tmp_path))

  later = uci_mnist.get_config()  # a later command without the flags
  later.feature.epochs = 5
  preflight.restore_settings(later, pair, str(tmp_path), explicit={'feature.epochs'})
  assert later.model.generator_filters == 8 and later.source.epochs == 3
  assert later.feature.epochs == 5  # given on this command line: it wins

  contradicting = uci_mnist.get_config()
  contradicting.model.generator_filters = 16
  with pytest.raises(UserError, match=r"--config.model.generator_filters=16 contradicts 8"):
    preflight.restore_settings(contradicting, pair, str(tmp_path),
                               explicit={'model.generator_filters'})
  with pytest.raises(UserError, match="holds a run of pair 'uci_mnist'"):
    preflight.restore_settings(uci_mnist.get_config(), pairs.PAIRS['mnist_uci'],
                               str(tmp_path), explicit=set())


def test_a_custom_pairs_image_shape_is_saved(tmp_path):
  pair = _custom('uci_digits', 'mnist_sample')
  preflight.save_settings(_config(), pair, str(tmp_path))
  shape = preflight.restore_settings(_config(), pair, str(tmp_path), explicit=set())
  assert shape == (12, 12, 1)


@pytest.mark.parametrize('name', ['steps_per_call', 'log_every_steps', 'checkpoint_every_steps',
                                  'max_checkpoints_to_keep', 'epochs_per_iterator'])
@pytest.mark.parametrize('value', [0, -1])
def test_step_counts_below_one_are_refused_before_any_stage(name, value):
  # `trainer.fit` cuts calls at multiples of these: 0 divided by zero or never advanced.
  from cycada_tf import workflow  # pylint: disable=g-import-not-at-top
  config = uci_mnist.get_config()
  workflow.check_config('all', config)
  config.train[name] = value
  with pytest.raises(UserError, match=rf'^--config\.train\.{name}={value} must be .* at least 1'):
    workflow.check_config('source', config)


@pytest.mark.parametrize('stage', ['source', 'target_only', 'pixel', 'task', 'feature'])
@pytest.mark.parametrize('value', [0, -4])
def test_a_batch_size_below_one_is_refused_before_any_stage(stage, value):
  # Without this check, `all` failed only when the stage built (after the earlier ones trained).
  # (A non-integer cannot get here: the config's fields keep their int type.)
  from cycada_tf import workflow  # pylint: disable=g-import-not-at-top
  config = uci_mnist.get_config()
  config[stage].batch_size = value
  with pytest.raises(UserError, match=rf'^--config\.{stage}\.batch_size={value} must be a whole'):
    workflow.check_config('all', config)
