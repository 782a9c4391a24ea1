"""Shared fixtures and helpers. Tests never touch ~/tensorflow_datasets: every TFDS call gets a
tmp data_dir.

Helpers used by several test modules live here (import them with `from tests.conftest import
...`): the repository root, running a snippet in a fresh interpreter (logical CPUs need a new
process), the tiny uci_mnist config and its context, writing a finished stage without training
it, image folders for custom pairs, and reading TensorBoard summaries.
"""

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The modules that take longest (their tests' total seconds in a full run, largest first).
# pytest-xdist hands out whole files (`--dist loadfile`) in collection order
# (`--no-loadscope-reorder`): starting the longest ones first keeps a worker from picking up a
# four-minute file when the others are nearly done. Other modules keep their usual order.
# Some long modules run their heavy work in a module fixture followed by one small test per
# thing checked, so each check is reported on its own. That is for the reports, not for time:
# the suite is CPU-bound on two cores, the split measured no faster, and the order of modules
# matters for its tail only (docs/performance.md, "Test suite").
LONGEST_MODULES = (
    'test_replica_stages.py', 'test_all.py', 'test_segmentation_stages.py',
    'test_multi_worker.py', 'test_segmentation_replicas.py', 'test_bench.py',
    'test_distribute.py', 'test_stages.py', 'test_translated_cache.py', 'test_inspect.py',
    'test_cli_errors.py', 'test_export.py', 'test_monitoring.py',
    'test_segmentation_models.py', 'test_scenes_builder.py',
)


def pytest_collection_modifyitems(items):
  """Runs `LONGEST_MODULES` first (a stable sort, so the order within a module is kept)."""
  rank = {name: i for i, name in enumerate(LONGEST_MODULES)}
  items.sort(key=lambda item: rank.get(os.path.basename(str(item.fspath)), len(rank)))


def run_python(script, expect, timeout=240, argv=()):
  """Runs `script` (with `argv`) with the repo importable; fails unless stdout has `expect`.

  Returns the finished process, for tests that read more of its output.
  """
  env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL='3', CUDA_VISIBLE_DEVICES='')
  result = subprocess.run([sys.executable, '-c', script, *argv], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)
  assert expect in result.stdout, result.stderr[-3000:]
  return result


def tiny_config(**max_steps):
  """uci_mnist's config with narrow networks, small batches and few steps per stage."""
  from configs import uci_mnist  # pylint: disable=g-import-not-at-top
  config = uci_mnist.get_config()
  config.model.update(generator_filters=8, discriminator_filters=8)
  config.train.update(log_every_steps=5, checkpoint_every_steps=10, steps_per_call=5)
  config.source.update(batch_size=32, epochs=1)
  config.target_only.update(batch_size=32, epochs=1)
  config.pixel.update(batch_size=16, epochs=1, decay_epochs=0, image_every_steps=10)
  config.task.update(batch_size=32, epochs=1)
  config.feature.update(batch_size=32, epochs=2, learning_rate=1e-3,
                        discriminator_learning_rate=1e-3)
  config.eval.batch_size = 250
  for key, value in max_steps.items():
    config[key] = value
  return config


def make_context(model_dir, data_dir, config=None):
  from cycada_tf.data import pairs  # pylint: disable=g-import-not-at-top
  from cycada_tf.stages import common  # pylint: disable=g-import-not-at-top
  return common.Context(config=config or tiny_config(), pair=pairs.PAIRS['uci_mnist'],
                        model_dir=str(model_dir), data_dir=data_dir)


def pretend_finished(ctx, stage_name, models_by_key=None):
  """Writes what a finished stage leaves for later stages, `export` and `--stage=all`: a
  checkpoint of `models_by_key` (as `trainer.fit` names them) and metrics.json.

  A test of what a later stage does with a stage's output needs the output, not the training
  (a pixel stage is a trace of about half a minute).
  """
  from cycada_tf import trainer  # pylint: disable=g-import-not-at-top
  from cycada_tf.stages import common  # pylint: disable=g-import-not-at-top
  stage_dir = ctx.stage_dir(stage_name)
  if models_by_key:
    trainer.checkpoint_for(models=models_by_key).save(
        os.path.join(trainer.checkpoint_dir(stage_dir), 'ckpt'))
  trainer.write_json_atomically(os.path.join(stage_dir, common.METRICS_FILE),
                                {'stage': stage_name, 'target_test_accuracy': 0.5})


def pretend_finished_pixel(ctx, seed):
  """A finished pixel stage whose G_ST has the initial weights that `seed` draws (for `task`,
  which only translates with G_ST, an untrained generator is as good as a trained one)."""
  import keras  # pylint: disable=g-import-not-at-top
  from cycada_tf.stages import common  # pylint: disable=g-import-not-at-top
  keras.utils.set_random_seed(seed)
  g_st = common.build_network(common.new_generator(ctx.config, ctx.image_shape[-1]),
                              ctx.image_shape)
  pretend_finished(ctx, 'pixel', {'g_st': g_st})


def image_folder(root, classes=('cat', 'dog'), per_class=3, size=12, mode='L',
                 splits=('train', 'test')):
  """An ImageFolder tree root/<split>/<class>/<i>.png of random `size`×`size` images in PIL
  `mode`; returns the domain name `folder:root`. `per_class` is a count, or {split: count}."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  channels = len(Image.new(mode, (1, 1)).getbands())
  for split in splits:
    count = per_class[split] if isinstance(per_class, dict) else per_class
    for name in classes:
      os.makedirs(os.path.join(root, split, name))
      for i in range(count):
        pixels = rng.integers(0, 256, (size, size, channels), dtype=np.uint8)
        Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode).save(
            os.path.join(root, split, name, f'{i}.png'))
  return f'folder:{root}'


def session_run(path, signature, **inputs):
  """Runs a SavedModel signature the way TF Serving does: TF1 session, graph-mode loader, fed
  by tensor name."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  with tf.Graph().as_default(), tf.compat.v1.Session() as session:
    meta_graph = tf.compat.v1.saved_model.loader.load(session, ['serve'], path)
    signature_def = meta_graph.signature_def[signature]
    feeds = {signature_def.inputs[k].name: v for k, v in inputs.items()}
    fetches = {k: v.name for k, v in signature_def.outputs.items()}
    return session.run(fetches, feeds)


def summaries_of(event_dir, tag):
  """(step, summary value) of every TensorBoard summary `tag` in `event_dir`, in step order."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  found = []
  for name in sorted(os.listdir(event_dir)):
    for record in tf.data.TFRecordDataset(os.path.join(event_dir, name)):
      event = tf.compat.v1.Event.FromString(record.numpy())
      found += [(event.step, value) for value in event.summary.value if value.tag == tag]
  return sorted(found, key=lambda step_value: step_value[0])


def scalars(event_dir, tag):
  """The values of one TensorBoard scalar, in step order."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return [v for _, v in sorted((step, float(tf.make_ndarray(value.tensor)))
                              for step, value in summaries_of(event_dir, tag))]


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


SCENE_SPLITS = {'train': 48, 'test': 16}


@pytest.fixture(scope='session')
def scenes_data_dir(tmp_path_factory):
  """A TFDS data_dir with the offline scene pair, `SCENE_SPLITS` images a split (not 1,200).

  The stages read the split sizes from the prepared dataset's info, so once built the smaller
  splits are what every test (and subprocess) given this directory sees.
  """
  from cycada_tf.data import domains  # pylint: disable=g-import-not-at-top
  # pylint: disable-next=g-import-not-at-top
  from cycada_tf.data.builders.scenes import scenes_dataset_builder as scenes
  data_dir = str(tmp_path_factory.mktemp('tfds_scenes'))
  with pytest.MonkeyPatch.context() as patch:
    for builder in (scenes.ScenesSynthetic, scenes.ScenesReal):
      patch.setattr(builder, 'SPLITS', dict(SCENE_SPLITS))
    for name in ('scenes_synthetic', 'scenes_real'):
      domains.domain_info(name, data_dir)
  return data_dir


def tiny_segmentation_config(**max_steps):
  """scenes_synthetic_real's config with the narrowest networks and small crops and batches."""
  from configs import scenes_synthetic_real  # pylint: disable=g-import-not-at-top
  config = scenes_synthetic_real.get_config()
  config.data.update(crop_size=(32, 64), shuffle_buffer=64)
  config.model.update(width=0.25, generator_filters=4, discriminator_filters=4)
  config.train.update(log_every_steps=4, checkpoint_every_steps=8, steps_per_call=2,
                      monitor_every_epochs=1)
  config.source.update(batch_size=8, epochs=2)  # across an epoch boundary
  for name in ('target_only', 'task'):
    config[name].update(batch_size=8, epochs=1)
  config.pixel.update(batch_size=4, epochs=1, decay_epochs=0, crop_size=(32, 32),
                      image_every_steps=8)
  config.feature.update(batch_size=8, epochs=2, gate_window=4)
  config.eval.update(batch_size=8, grid_examples=2)
  for key, value in max_steps.items():
    config[key] = value
  return config
