"""Export stage: versioned SavedModels whose signatures reproduce the Keras models on raw input.

One module-scoped run trains a LeNet for a few steps on real UCI digits, fakes finished `source`
and `pixel` stages from it, and exports twice (the second time with a `task` classifier added),
so most tests only load and query the result.
"""

import io
import json
import os
import re
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
from cycada_tf.data import pairs
from cycada_tf.data import pipeline
from cycada_tf.data import translated
from cycada_tf.errors import UserError
from cycada_tf.stages import common
from cycada_tf.stages import export

# Trains real stages end to end: excluded from the fast tier (-m "not slow").
pytestmark = pytest.mark.slow

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


def _session_run(path, signature, **inputs):
  """Runs a signature the way TF Serving does: TF1 session, graph-mode loader, fed by name."""
  with tf.Graph().as_default(), tf.compat.v1.Session() as session:
    meta_graph = tf.compat.v1.saved_model.loader.load(session, ['serve'], path)
    signature_def = meta_graph.signature_def[signature]
    feeds = {signature_def.inputs[k].name: v for k, v in inputs.items()}
    fetches = {k: v.name for k, v in signature_def.outputs.items()}
    return session.run(fetches, feeds)


def _softmax(net, uint8_images):
  logits, _ = net(tf.constant(uint8_images, tf.float32) / 127.5 - 1.0, training=False)
  return tf.nn.softmax(logits).numpy()


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
  assert recorded['translator']['path'] == os.path.join(ctx.model_dir, 'export_translator', '2')
  assert serving.existing_versions(os.path.join(ctx.model_dir, 'export_translator')) == [1, 2]
  task_probabilities = tf.saved_model.load(second['path']).signatures['serving_default'](
      images=tf.constant(run['images'][:16]))['probabilities'].numpy()
  np.testing.assert_allclose(task_probabilities, _softmax(run['task'], run['images'][:16]),
                             atol=1e-5)


def test_savedmodel_accuracy_on_raw_target_images_equals_keras_pipeline(run):
  first = run['first']
  assert first['target_test_examples'] == 60
  # The serving graph decodes and preprocesses exactly like training: not one prediction differs.
  assert first['target_test_accuracy'] == pytest.approx(first['keras_target_test_accuracy'],
                                                        abs=1e-9)
  assert first['target_test_accuracy'] > 0.5  # a trained model, not chance


def test_serving_default_matches_keras_on_real_digits(run):
  images = run['images'][:64]
  outputs = run['loaded'].signatures['serving_default'](images=tf.constant(images))
  assert outputs['probabilities'].dtype == tf.float32 and outputs['classes'].dtype == tf.int64
  expected = _softmax(run['source'], images)
  np.testing.assert_allclose(outputs['probabilities'].numpy(), expected, atol=1e-5)
  np.testing.assert_array_equal(outputs['classes'].numpy(), expected.argmax(-1))
  assert np.mean(outputs['classes'].numpy() == run['labels'][:64]) > 0.5


def test_session_loader_sees_the_trained_weights(run):
  # TF Serving loads with a session; Keras 3 weights saved the naive way come back uninitialised.
  images = run['images'][:16]
  outputs = _session_run(run['first']['path'], 'serving_default', images=images)
  np.testing.assert_allclose(outputs['probabilities'], _softmax(run['source'], images),
                             atol=1e-5)


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
  np.testing.assert_allclose(_session_run(path, 'serving_default', images=grey)['probabilities'],
                             expected, atol=1e-5)


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
  decoded = [tf.io.decode_png(data).numpy() for data in pngs['images'].numpy()]
  assert [d.shape for d in decoded] == [IMAGE_SHAPE, IMAGE_SHAPE]
  np.testing.assert_array_equal(decoded[0], served.numpy()[0])


def test_saved_model_cli_shows_and_runs_the_signatures(run, tmp_path):
  path = run['first']['path']
  shown = subprocess.run([SAVED_MODEL_CLI, 'show', '--dir', path, '--all'],
                         capture_output=True, text=True, timeout=120, check=True).stdout
  assert "signature_def['serving_default']" in shown
  assert "signature_def['serve_bytes']" in shown
  assert "outputs['probabilities']" in shown and "outputs['classes']" in shown
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


def test_without_a_classifier_stage_names_the_command(tmp_path):
  ctx = _context(tmp_path, 'folder:' + str(tmp_path))
  with pytest.raises(UserError, match='--stage=source'):
    export.run(ctx)
  assert not os.path.exists(os.path.join(tmp_path, 'export'))


def test_non_chief_writes_nothing(run, tmp_path, monkeypatch):
  ctx = _context(tmp_path, run['ctx'].pair.target)
  _finish_stage(ctx.model_dir, 'source', 'classifier', run['source'])
  monkeypatch.setattr(common.distribute, 'is_chief', lambda strategy: False)
  assert export.run(ctx) is None
  assert not os.path.exists(os.path.join(tmp_path, 'export'))
