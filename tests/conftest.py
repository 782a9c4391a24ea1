"""Shared fixtures. Tests never touch ~/tensorflow_datasets: every TFDS call gets a tmp data_dir."""

import pytest


@pytest.fixture(scope='session')
def offline_data_dir(tmp_path_factory):
  """A TFDS data_dir with the two offline digit datasets prepared once per test session.

  Building them takes a few seconds, so all data tests (and the inspect subprocess) share it.
  """
  from cycada_tf.data import domains  # pylint: disable=g-import-not-at-top
  data_dir = str(tmp_path_factory.mktemp('tfds'))
  for name in domains.OFFLINE_DOMAINS:
    domains.domain_info(name, data_dir)
  return data_dir
