"""Export stage: versioned SavedModels whose signatures reproduce the Keras models on raw input.

One module-scoped run (slow) trains a LeNet for a few steps on real UCI digits, fakes finished
`source` and `pixel` stages from it, and exports twice (the second time with a `task` classifier
added), so most tests only load and query the result. The fast tests of idempotency and
provenance export tiny untrained models on the offline uci_mnist pair instead.
"""

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys

import keras
import numpy as np
from PIL import Image
import pytest
from sklearn import datasets as sk_datasets
import tensorflow as tf

from configs import base as base_config
from cycada_tf import models
from cycada_tf import serving
from cycada_tf import trainer
from cycada_tf import workflow
from cycada_tf.data import pairs
from cycada_tf.data import pipeline
from cycada_tf.data import translated
from cycada_tf.errors import UserError
from cycada_tf.stages import common
from cycada_tf.stages import export
from tests.conftest import REPO
from tests.conftest import make_context
from tests.conftest import pretend_finished
from tests.conftest import session_run

IMAGE_SHAPE = (28, 28, 1)
SAVED_MODEL_CLI = os.path.join(os.path.dirname(sys.executable), 'saved_model_cli')


def _uci_digits_28():
  """UCI digits as MNIST-like uint8 28×28×1 (8×8 → 20×20, centred), and their labels."""
  digits = sk_datasets.load_digits()
  small = np.round(digits.images * (255.0 / 16.0))[..., None].astype(np.float32)
  inner = tf.image.resize(small, [20, 20], method='bilinear', antialias=True)
  padded = tf.pad(inner, [[0, 0], [4, 4], [4, 4], [0, 0]])
  images = np.round(np.clip(padded.numpy(), 0, 255)).astype(np.uint8)
  return images, digits.target.astype(np.int64)


def _train_lenet(images, labels, steps=120, batch=64):
  """A LeNet trained briefly: probabilities far from uniform, an accuracy that means something."""
  keras.utils.set_random_seed(0)
  net = common.build_network(models.build_classifier('lenet', 10), IMAGE_SHAPE)
  optimizer = keras.optimizers.Adam(1e-3)
  x = tf.constant(images, tf.float32) / 127.5 - 1.0
  y = tf.constant(labels)

  @tf.function
  def step(xb, yb):
    with tf.GradientTape() as tape:
      logits, _ = net(xb, training=True)
      loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(yb, logits))
    optimizer.apply_gradients(zip(tape.gradient(loss, net.trainable_variables),
                                  net.trainable_variables))

  rng = np.random.default_rng(0)
  for _ in range(steps):
    idx = rng.choice(len(images), batch, replace=False)
    step(tf.gather(x, idx), tf.gather(y, idx))
  return net


def _finish_stage(model_dir, stage_name, model_key, model):
  """Writes what a finished stage leaves behind: a checkpoint and metrics.json."""
  stage_dir = os.path.join(model_dir, stage_name)
  trainer.checkpoint_for(models={model_key: model}).save(
      os.path.join(trainer.checkpoint_dir(stage_dir), 'ckpt'))
  with open(os.path.join(stage_dir, common.METRICS_FILE), 'w') as f:
    json.dump({'stage': stage_name}, f)


def _write_folder_domain(root, images, labels, per_class=6):
  """An ImageFolder test split mixing 28×28 grey, 42×42 RGB and 19×19 grey PNGs."""
  for digit in range(10):
    os.makedirs(os.path.join(root, 'test', str(digit)))
    for k, i in enumerate(np.flatnonzero(labels == digit)[:per_class]):
      picture = Image.fromarray(images[i, ..., 0])
      if k % 3 == 1:
        picture = picture.convert('RGB').resize((42, 42), Image.BILINEAR)
      elif k % 3 == 2:
        picture = picture.resize((19, 19), Image.BILINEAR)
      picture.save(os.path.join(root, 'test', str(digit), f'{i}.png'))


def _context(model_dir, domain):
  pair = pairs.Pair(name=f'custom:{domain}__{domain}', source=domain, target=domain,
                    image_shape=IMAGE_SHAPE, config='base', offline=True, description='test')
  config = base_config.get_config()
  config.eval.batch_size = 64
  return common.Context(config=config, pair=pair, model_dir=str(model_dir))


def _png(array):
  buffer = io.BytesIO()
  Image.fromarray(np.squeeze(array)).save(buffer, format='PNG')
  return buffer.getvalue()


# Trains real stages end to end: the tests that use it are excluded from the fast tier.
@pytest.fixture(scope='module')
def run(tmp_path_factory):
  """Source + pixel finished → export (v1); a task classifier added → export again (v2)."""
  images, labels = _uci_digits_28()
  root = tmp_path_factory.mktemp('export')
  domain = 'folder:' + str(root / 'digits')
  _write_folder_domain(str(root / 'digits'), images, labels)
  ctx = _context(root / 'model', domain)
  source = _train_lenet(images, labels)
  _finish_stage(ctx.model_dir, 'source', 'classifier', source)
  keras.utils.set_random_seed(1)
  generator = common.build_network(models.build_generator('digit', 1), IMAGE_SHAPE)
  _finish_stage(ctx.model_dir, 'pixel', 'g_st', generator)
  first = export.run(ctx)
  keras.utils.set_random_seed(2)
  task = common.new_classifier(ctx)  # untrained: its outputs differ clearly from `source`
  _finish_stage(ctx.model_dir, 'task', 'classifier', task)
  second = export.run(ctx, evaluate_target=False)
  return dict(ctx=ctx, images=images, labels=labels, source=source, task=task,
              generator=generator, first=first, second=second,
              loaded=tf.saved_model.load(first['path']))


def _softmax(net, uint8_images):
  logits, _ = net(tf.constant(uint8_images, tf.float32) / 127.5 - 1.0, training=False)
  return tf.nn.softmax(logits).numpy()


@pytest.mark.slow
def test_versions_layout_and_metrics(run):
  ctx, first, second = run['ctx'], run['first'], run['second']
  export_root = os.path.join(ctx.model_dir, 'export')
  assert (first['version'], second['version']) == (1, 2)
  assert first['path'] == os.path.join(export_root, '1')
  assert sorted(os.listdir(export_root)) == ['1', '2', 'metrics.json']  # no temp dirs left
  # The latest finished classifier stage wins: task once it exists.
  assert (first['exported_stage'], second['exported_stage']) == ('source', 'task')
  with open(os.path.join(export_root, 'metrics.json')) as f:
    recorded = json.load(f)
  assert recorded['version'] == 2 and recorded['input_shape'] == list(IMAGE_SHAPE)
  assert recorded['signatures'] == ['serving_default', 'serve_bytes']
  assert recorded['max_abs_probability_difference'] <= 1e-5
  assert recorded['exported_from']['stage'] == 'task'
  # G_ST did not change between the two exports: its version 1 is kept, not copied to a 2.
  assert recorded['translator']['path'] == os.path.join(ctx.model_dir, 'export_translator', '1')
  assert serving.existing_versions(os.path.join(ctx.model_dir, 'export_translator')) == [1]
  assert export.is_current(ctx)
  task_probabilities = tf.saved_model.load(second['path']).signatures['serving_default'](
      images=tf.constant(run['images'][:16]))['probabilities'].numpy()
  np.testing.assert_allclose(task_probabilities, _softmax(run['task'], run['images'][:16]),
                             atol=1e-5)


@pytest.mark.slow
def test_savedmodel_accuracy_on_raw_target_images_equals_keras_pipeline(run):
  first = run['first']
  assert first['target_test_examples'] == 60
  # The serving graph decodes and preprocesses exactly like training: not one prediction differs.
  assert first['target_test_accuracy'] == pytest.approx(first['keras_target_test_accuracy'],
                                                        abs=1e-9)
  assert first['target_test_accuracy'] > 0.5  # a trained model, not chance


@pytest.mark.slow
def test_serving_default_matches_keras_on_real_digits(run):
  images = run['images'][:64]
  outputs = run['loaded'].signatures['serving_default'](images=tf.constant(images))
  assert outputs['probabilities'].dtype == tf.float32 and outputs['classes'].dtype == tf.int64
  expected = _softmax(run['source'], images)
  np.testing.assert_allclose(outputs['probabilities'].numpy(), expected, atol=1e-5)
  np.testing.assert_array_equal(outputs['classes'].numpy(), expected.argmax(-1))
  assert np.mean(outputs['classes'].numpy() == run['labels'][:64]) > 0.5


@pytest.mark.slow
def test_session_loader_sees_the_trained_weights(run):
  # TF Serving loads with a session; Keras 3 weights saved the naive way come back uninitialised.
  images = run['images'][:16]
  outputs = session_run(run['first']['path'], 'serving_default', images=images)
  np.testing.assert_allclose(outputs['probabilities'], _softmax(run['source'], images),
                             atol=1e-5)


@pytest.mark.slow
def test_dtn_with_batch_norm_exports_for_rgb_pairs(tmp_path):
  """SVHN→MNIST's DTN at 32×32×3: moving statistics must be saved and used (training=False)."""
  keras.utils.set_random_seed(3)
  net = common.build_network(models.build_classifier('dtn', 10), (32, 32, 3))
  for variable in net.non_trainable_variables:  # non-trivial moving mean / variance
    variable.assign(tf.random.uniform(variable.shape, 0.5, 1.5))
  _, path = serving.save_versioned(serving.ClassifierServer(net, (32, 32, 3)), str(tmp_path))
  grey = np.random.default_rng(0).integers(0, 256, size=(4, 28, 28, 1), dtype=np.uint8)
  expected = tf.stack([pipeline.preprocess(image, (32, 32, 3)) for image in grey])
  expected = tf.nn.softmax(net(expected, training=False)[0]).numpy()
  served = tf.saved_model.load(path).signatures['serving_default'](images=tf.constant(grey))
  np.testing.assert_allclose(served['probabilities'].numpy(), expected, atol=1e-5)
  np.testing.assert_allclose(session_run(path, 'serving_default', images=grey)['probabilities'],
                             expected, atol=1e-5)


@pytest.mark.slow
def test_serving_default_resizes_and_converts_rgb(run):
  images = run['images'][:8]
  big_rgb = tf.image.resize(np.repeat(images, 3, axis=-1).astype(np.float32), [56, 56],
                            method='bilinear', antialias=True)
  big_rgb = tf.cast(tf.round(tf.clip_by_value(big_rgb, 0, 255)), tf.uint8)
  outputs = run['loaded'].signatures['serving_default'](images=big_rgb)
  assert outputs['probabilities'].shape == (8, 10)
  expected = tf.stack([pipeline.preprocess(image, IMAGE_SHAPE) for image in big_rgb])
  logits, _ = run['source'](expected, training=False)
  np.testing.assert_allclose(outputs['probabilities'].numpy(), tf.nn.softmax(logits).numpy(),
                             atol=1e-5)


@pytest.mark.slow
def test_serve_bytes_accepts_mixed_sizes(run):
  images = run['images'][:3]
  rgb_big = np.asarray(Image.fromarray(images[2, ..., 0]).convert('RGB').resize((40, 40)))
  encoded = tf.constant([_png(images[0]), _png(images[1]), _png(rgb_big)])
  outputs = run['loaded'].signatures['serve_bytes'](images=encoded)
  assert outputs['probabilities'].shape == (3, 10)
  from_pixels = run['loaded'].signatures['serving_default'](images=tf.constant(images[:2]))
  np.testing.assert_allclose(outputs['probabilities'].numpy()[:2],
                             from_pixels['probabilities'].numpy(), atol=1e-6)
  expected = pipeline.preprocess(tf.constant(rgb_big), IMAGE_SHAPE)[tf.newaxis]
  logits, _ = run['source'](expected, training=False)
  np.testing.assert_allclose(outputs['probabilities'].numpy()[2],
                             tf.nn.softmax(logits).numpy()[0], atol=1e-5)


@pytest.mark.slow
def test_bad_inputs_fail_with_clear_messages(run):
  serve = run['loaded'].signatures['serving_default']
  with pytest.raises(tf.errors.InvalidArgumentError, match='uint8'):
    serve(images=tf.zeros((2, 28, 28, 1), tf.float32))
  expected = re.escape(serving.INPUT_ERROR)
  with pytest.raises(tf.errors.InvalidArgumentError, match=expected):
    serve(images=tf.zeros((28, 28, 1), tf.uint8))
  with pytest.raises(tf.errors.InvalidArgumentError, match=expected):
    serve(images=tf.zeros((2, 28, 28, 2), tf.uint8))
  with pytest.raises(tf.errors.InvalidArgumentError):
    run['loaded'].signatures['serve_bytes'](images=tf.constant([b'not an image']))


@pytest.mark.slow
def test_translator_export_matches_generator(run):
  loaded = tf.saved_model.load(run['first']['translator']['path'])
  images = np.concatenate([run['images'][:4], run['images'][4:8]])
  served = loaded.signatures['serving_default'](images=tf.constant(images))['images']
  assert served.dtype == tf.uint8 and served.shape == (8,) + IMAGE_SHAPE
  inputs = tf.constant(images, tf.float32) / 127.5 - 1.0
  expected = translated.to_uint8(run['generator'](inputs, training=False)).numpy()
  assert np.max(np.abs(served.numpy().astype(int) - expected.astype(int))) <= 1
  rgb = np.asarray(Image.fromarray(images[0, ..., 0]).convert('RGB').resize((36, 36)))
  pngs = loaded.signatures['serve_bytes'](images=tf.constant([_png(images[0]), _png(rgb)]))
  decoded = [tf.io.decode_png(data).numpy() for data in pngs['images_bytes'].numpy()]
  assert [d.shape for d in decoded] == [IMAGE_SHAPE, IMAGE_SHAPE]
  np.testing.assert_array_equal(decoded[0], served.numpy()[0])


@pytest.mark.slow
def test_saved_model_cli_runs_the_serving_signature(run, tmp_path):
  """TensorFlow's own CLI loads the export and runs it (a TF-importing process; the signature
  defs TF Serving reads are checked in-process by tests/test_serving_rest.py)."""
  path = run['first']['path']
  # This TF's saved_model_cli only evaluates literals in --input_exprs (no `np.zeros(...)`), so
  # the uint8 batch goes in as a .npy file, which also keeps its dtype.
  batch = os.path.join(tmp_path, 'batch.npy')
  np.save(batch, np.zeros((2, 28, 28, 1), dtype=np.uint8))
  ran = subprocess.run(
      [SAVED_MODEL_CLI, 'run', '--dir', path, '--tag_set', 'serve', '--signature_def',
       'serving_default', '--inputs', f'images={batch}'],
      capture_output=True, text=True, timeout=120)
  assert ran.returncode == 0, ran.stderr[-2000:]
  assert 'classes' in ran.stdout and 'probabilities' in ran.stdout


@pytest.mark.slow
def test_without_a_classifier_stage_names_the_command(tmp_path):
  ctx = _context(tmp_path, 'folder:' + str(tmp_path))
  with pytest.raises(UserError, match='--stage=source'):
    export.run(ctx)
  assert not os.path.exists(os.path.join(tmp_path, 'export'))


@pytest.mark.slow
def test_non_chief_writes_nothing(run, tmp_path, monkeypatch):
  ctx = _context(tmp_path, run['ctx'].pair.target)
  _finish_stage(ctx.model_dir, 'source', 'classifier', run['source'])
  monkeypatch.setattr(common.distribute, 'is_chief', lambda strategy: False)
  assert export.run(ctx) is None
  assert not os.path.exists(os.path.join(tmp_path, 'export'))


# --- Idempotency and provenance, on tiny untrained models (fast) -------------------------------


@pytest.fixture(scope='module')
def tiny(tmp_path_factory, offline_data_dir):
  """A uci_mnist model_dir as `--stage=all` leaves it (tiny untrained models), exported once."""
  ctx = make_context(tmp_path_factory.mktemp('tiny') / 'model', offline_data_dir)
  keras.utils.set_random_seed(0)
  pretend_finished(ctx, 'source', {'classifier': common.new_classifier(ctx)})
  pretend_finished(ctx, 'target_only')
  generator = common.build_network(common.new_generator(ctx.config, 1), ctx.image_shape)
  pretend_finished(ctx, 'pixel', {'g_st': generator})
  pretend_finished(ctx, 'task')
  pretend_finished(ctx, 'feature', {'classifier': common.new_classifier(ctx)})
  return {'ctx': ctx, 'metrics': export.run(ctx, evaluate_target=False)}


def _copy(tiny, tmp_path, with_export=True):
  """A copy of the tiny model_dir (with or without its exports), and its context."""
  skipped = () if with_export else ('export', export.TRANSLATOR_DIR)
  model_dir = str(tmp_path / 'model')
  shutil.copytree(tiny['ctx'].model_dir, model_dir, ignore=lambda d, names: [
      n for n in names if d == tiny['ctx'].model_dir and n in skipped])
  return make_context(model_dir, tiny['ctx'].data_dir)


def _listing(ctx):
  return {root: sorted(os.listdir(os.path.join(ctx.model_dir, root)))
          for root in ('export', export.TRANSLATOR_DIR)}


def _relative(metrics, ctx):
  """`metrics` with the model_dir taken out of its paths, to compare two model_dirs' exports."""
  return json.loads(json.dumps(metrics).replace(ctx.model_dir, '<model_dir>'))


def _retrain(ctx, stage_name):
  """The stage deleted and run again: its `ckpt-1` has other weights, at the same path."""
  shutil.rmtree(ctx.stage_dir(stage_name))
  keras.utils.set_random_seed(7)
  pretend_finished(ctx, stage_name, {'classifier': common.new_classifier(ctx)})


def test_each_version_records_what_it_was_exported_from(tiny):
  ctx, metrics = tiny['ctx'], tiny['metrics']
  for root, stage_name, part in (('export', 'feature', metrics),
                                 (export.TRANSLATOR_DIR, 'pixel', metrics['translator'])):
    version_dir = os.path.join(ctx.model_dir, root, '1')
    # TF Serving reads only the numeric version dirs and their assets.extra/ warm-up file.
    assert sorted(os.listdir(os.path.join(version_dir, serving.ASSETS_EXTRA))) == [
        serving.RECORD_FILE, serving.WARMUP_FILE]
    record = serving.read_record(version_dir)
    origin = record['exported_from']
    assert origin['stage'] == stage_name
    assert origin['checkpoint'] == os.path.join(stage_name, 'checkpoints', 'ckpt-1')
    assert origin['checkpoint_number'] == 1
    assert origin['checkpoint_weights_sha256'] == trainer.checkpoint_fingerprint(
        os.path.join(ctx.model_dir, origin['checkpoint']))
    # metrics.json says the same, and reports the checks made when the version was saved.
    assert part['exported_from'] == origin and part['version'] == 1
    for check, value in record['checks'].items():
      assert part[check] == value
  assert metrics['exported_stage'] == 'feature'
  assert metrics['translator']['outputs']['serve_bytes'].startswith('images_bytes:')
  assert export.is_current(ctx)


def test_export_rerun_on_unchanged_checkpoints_keeps_the_versions(tiny, tmp_path, capsys):
  ctx = _copy(tiny, tmp_path)
  # The copy's metrics.json names the original's paths: not a description of this model_dir.
  assert not export.is_current(ctx)
  metrics = export.run(ctx, evaluate_target=False)
  assert _listing(ctx) == {'export': ['1', 'metrics.json'], export.TRANSLATOR_DIR: ['1']}
  assert _relative(metrics, ctx) == _relative(tiny['metrics'], tiny['ctx'])
  assert 'unchanged since version 1' in capsys.readouterr().out
  assert export.is_current(ctx)


def test_export_killed_midway_and_rerun_equals_an_uninterrupted_one(tiny, tmp_path):
  # What kill -9 while saving G_ST leaves: the classifier's version published, no metrics.json,
  # and a half-written temporary directory beside the translator's versions.
  ctx = _copy(tiny, tmp_path)
  os.remove(ctx.metrics_path('export'))
  shutil.rmtree(os.path.join(ctx.model_dir, export.TRANSLATOR_DIR, '1'))
  stale = os.path.join(ctx.model_dir, export.TRANSLATOR_DIR, f'{serving.TEMP_PREFIX}1-99999')
  os.makedirs(os.path.join(stale, 'variables'))
  with open(os.path.join(stale, 'saved_model.pb'), 'wb') as f:
    f.write(b'half')
  assert not export.is_current(ctx)

  metrics = export.run(ctx, evaluate_target=False)
  assert _listing(ctx) == {'export': ['1', 'metrics.json'], export.TRANSLATOR_DIR: ['1']}
  assert _relative(metrics, ctx) == _relative(tiny['metrics'], tiny['ctx'])
  assert _relative(ctx.read_metrics('export'), ctx) == _relative(
      tiny['ctx'].read_metrics('export'), tiny['ctx'])


def test_is_current_only_while_metrics_describe_the_exports(tiny, tmp_path):
  ctx = _copy(tiny, tmp_path)
  export.run(ctx, evaluate_target=False)
  assert export.is_current(ctx)
  recorded = ctx.read_metrics('export')
  # A metrics.json written before versions recorded their origin.
  trainer.write_json_atomically(ctx.metrics_path('export'),
                                {k: v for k, v in recorded.items() if k != 'exported_from'})
  assert not export.is_current(ctx)
  trainer.write_json_atomically(ctx.metrics_path('export'), recorded)
  assert export.is_current(ctx)
  # A version deleted by hand.
  shutil.rmtree(os.path.join(ctx.model_dir, export.TRANSLATOR_DIR, '1'))
  assert not export.is_current(ctx)
  os.remove(ctx.metrics_path('export'))
  assert not export.is_current(ctx)


def test_stage_all_exports_again_after_a_stage_was_retrained(tiny, tmp_path, capsys):
  ctx = _copy(tiny, tmp_path)
  export.run(ctx, evaluate_target=False)
  capsys.readouterr()
  workflow.run_all(ctx)
  assert '[all] export: already finished' in capsys.readouterr().out
  _retrain(ctx, 'feature')  # same checkpoint path and number, other weights
  assert not export.is_current(ctx)
  results = workflow.run_all(ctx)
  out = capsys.readouterr().out
  assert '[all] feature: already finished' in out
  assert '[all] export: already finished' not in out
  exported = results['export']
  assert (exported['version'], exported['translator']['version']) == (2, 1)
  assert exported['exported_from']['checkpoint'] == os.path.join('feature', 'checkpoints',
                                                                  'ckpt-1')
  assert (exported['exported_from']['checkpoint_weights_sha256'] !=
          tiny['metrics']['exported_from']['checkpoint_weights_sha256'])
  assert _listing(ctx) == {'export': ['1', '2', 'metrics.json'], export.TRANSLATOR_DIR: ['1']}
  assert export.is_current(ctx)


_KILL_DURING_TRANSLATOR_SAVE = '''
import os, signal, sys
import tensorflow as tf
from cycada_tf.stages import export
from tests.conftest import make_context

save = tf.saved_model.save

def save_then_die(obj, path, *args, **kwargs):
  save(obj, path, *args, **kwargs)
  if export.TRANSLATOR_DIR in path:
    os.kill(os.getpid(), signal.SIGKILL)  # the SavedModel is written, not yet renamed

tf.saved_model.save = save_then_die
export.run(make_context(sys.argv[1], sys.argv[2]), evaluate_target=False)
'''


@pytest.mark.slow
def test_export_sigkilled_during_a_save_and_rerun_equals_an_uninterrupted_one(tiny, tmp_path):
  ctx = _copy(tiny, tmp_path, with_export=False)
  env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL='3', CUDA_VISIBLE_DEVICES='')
  killed = subprocess.run([sys.executable, '-c', _KILL_DURING_TRANSLATOR_SAVE, ctx.model_dir,
                           ctx.data_dir], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=300)
  assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
  left = _listing(ctx)
  assert left['export'] == ['1'] and len(left[export.TRANSLATOR_DIR]) == 1
  assert left[export.TRANSLATOR_DIR][0].startswith(serving.TEMP_PREFIX)

  metrics = export.run(ctx, evaluate_target=False)
  assert _listing(ctx) == {'export': ['1', 'metrics.json'], export.TRANSLATOR_DIR: ['1']}
  assert _relative(metrics, ctx) == _relative(tiny['metrics'], tiny['ctx'])
