"""Stage `export`: the final target classifier (and G_ST) as versioned SavedModels for serving.

Layout, TF Serving's: `<model_dir>/export/<version>/` holds the classifier of the most adapted
finished stage (feature, else task, else source) and `<model_dir>/export_translator/<version>/`
the pixel stage's G_ST when that stage has finished. Every run adds version 1 + the largest
existing one, so a serving process watching the directory picks up the new model and older
versions stay available for rollback. `<model_dir>/export/metrics.json` records what was
exported and how the exported graph performs; TF Serving ignores non-numeric entries there.

The signatures (see `cycada_tf.serving`) take raw uint8 pixels or encoded PNG/JPEG and do the
pipeline's preprocessing in the graph. Before a version is renamed into place, the saved graph is
loaded back and compared with the Keras model on a batch, so a model that does not reproduce its
own training-time outputs is never published. The reported `target_test_accuracy` is then the
*loaded SavedModel's* accuracy on the raw target test images, i.e. what a serving client gets,
next to the Keras model's accuracy through the training input pipeline.
"""

import os

import numpy as np
import tensorflow as tf

from cycada_tf import serving
from cycada_tf.data import domains
from cycada_tf.data import pipeline
from cycada_tf.data import translated
from cycada_tf.errors import UserError
from cycada_tf.stages import common

STAGE = 'export'
TRANSLATOR_DIR = 'export_translator'
# The saved graph runs the same ops on the same weights; anything above float noise is a bug.
PROBABILITY_TOLERANCE = 1e-5
# uint8 outputs may differ by one level where float noise straddles a rounding boundary.
PIXEL_TOLERANCE = 1
_CHECK_BATCH = 8


def run(ctx, evaluate_target=True):
  """Exports the latest classifier (and G_ST if the pixel stage finished); returns the metrics.

  Args:
    ctx: the run's `common.Context`.
    evaluate_target: also run the exported SavedModel over the target test split. Tests turn it
      off where the data would only cost time.

  Raises:
    UserError: if no classifier stage has finished (naming the command that trains one).
  """
  stage_name = common.latest_classifier_stage(ctx)
  if not ctx.is_chief:
    # Only one worker may create version directories, or two would race for the same number.
    return None
  classifier = common.load_classifier(ctx, stage_name, needed_by=STAGE)
  target_fraction = domains.domain_info(ctx.pair.target, ctx.data_dir).content_fraction
  server = serving.ClassifierServer(classifier, ctx.image_shape, target_fraction)
  agreement = {}

  def verify(path):
    agreement['max_abs_probability_difference'] = _check_classifier(
        tf.saved_model.load(path), classifier, ctx.image_shape, target_fraction, ctx.seed)

  version, path = serving.save_versioned(server, ctx.stage_dir(STAGE), verify=verify)
  print(f'[{STAGE}] {stage_name} classifier → {path}', flush=True)
  payload = {
      'exported_stage': stage_name,
      'version': version,
      'path': path,
      'signatures': list(serving.SIGNATURES),
      'input_shape': list(ctx.image_shape),
      'content_fraction': target_fraction,
      'inputs': {
          'serving_default': 'images: uint8 [N, H, W, C], C in {1, 3}, any H and W',
          'serve_bytes': 'images: string [N], encoded PNG or JPEG, sizes may differ',
      },
      'outputs': {
          'probabilities': f'float32 [N, {int(ctx.config.model.num_classes)}]',
          'classes': 'int64 [N]',
      },
      **agreement,
  }
  if evaluate_target:
    payload.update(_target_accuracies(ctx, tf.saved_model.load(path), classifier))
  payload['translator'] = _export_translator(ctx) if ctx.is_done('pixel') else None
  return common.write_stage_metrics(ctx, STAGE, payload)


def _keras_inputs(images, image_shape, content_fraction):
  """What the training pipeline feeds the Keras model for uint8 `images` [N, h, w, c]."""
  return tf.stack([pipeline.preprocess(image, image_shape, content_fraction)
                   for image in tf.unstack(images)])


def _check_images(image_shape, seed, channels=None):
  """A fixed uint8 batch at the model's size for save/load agreement checks."""
  height, width, model_channels = image_shape
  rng = np.random.default_rng(seed)
  shape = (_CHECK_BATCH, height, width, channels or model_channels)
  return tf.constant(rng.integers(0, 256, size=shape, dtype=np.uint8))


def _check_classifier(loaded, classifier, image_shape, content_fraction, seed):
  """Max |SavedModel − Keras| probability on a fixed batch; raises if above the tolerance."""
  images = _check_images(image_shape, seed)
  served = loaded.signatures['serving_default'](images=images)['probabilities'].numpy()
  logits, _ = classifier(_keras_inputs(images, image_shape, content_fraction), training=False)
  expected = tf.nn.softmax(tf.cast(logits, tf.float32)).numpy()
  difference = float(np.max(np.abs(served - expected)))
  if difference > PROBABILITY_TOLERANCE:
    raise RuntimeError(
        f'the exported classifier disagrees with the Keras model (max probability difference '
        f'{difference:.3g} > {PROBABILITY_TOLERANCE}); nothing was published.')
  return difference


def _target_accuracies(ctx, loaded, classifier):
  """Accuracy on the target test split: the SavedModel on raw images, Keras via the pipeline.

  The two should agree exactly: a gap means the serving graph preprocesses differently from
  training. A data problem (say the target domain is not prepared on this machine) does not undo
  the export; it is reported and the accuracies are left out.
  """
  try:
    dataset = domains.load_domain(ctx.pair.target, 'test', ctx.data_dir)
    keras_accuracy = common.accuracy_on(ctx, classifier, ctx.pair.target)
  except UserError as e:
    print(f'[{STAGE}] skipped the target test accuracy: {e}', flush=True)
    return {'target_test_accuracy': None, 'target_test_accuracy_skipped': str(e)}
  # Same-sized images batch; a folder domain of mixed sizes has to go one at a time.
  fixed_size = dataset.element_spec[0].shape.is_fully_defined()
  batch_size = int(ctx.config.eval.batch_size) if fixed_size else 1
  serve = loaded.signatures['serving_default']
  correct = total = 0
  for images, labels in dataset.batch(batch_size):
    if images.shape[-1] == 4:  # the pipeline drops alpha; the signature accepts 1 or 3 channels
      images = images[..., :3]
    classes = serve(images=images)['classes'].numpy()
    correct += int(np.sum(classes == labels.numpy()))
    total += int(labels.shape[0])
  return {'target_test_accuracy': correct / max(total, 1),
          'keras_target_test_accuracy': keras_accuracy,
          'target_test_examples': total}


def _export_translator(ctx):
  """Exports the pixel stage's G_ST; returns its part of the metrics."""
  generator = common.load_translator(ctx, needed_by=STAGE)
  # G_ST translates *source* images, so its inputs are framed like the source domain's.
  source_fraction = domains.domain_info(ctx.pair.source, ctx.data_dir).content_fraction
  server = serving.TranslatorServer(generator, ctx.image_shape, source_fraction)
  agreement = {}

  def verify(path):
    images = _check_images(ctx.image_shape, ctx.seed + 1)
    served = tf.saved_model.load(path).signatures['serving_default'](images=images)['images']
    expected = translated.to_uint8(generator(
        _keras_inputs(images, ctx.image_shape, source_fraction), training=False))
    difference = int(np.max(np.abs(served.numpy().astype(np.int32) -
                                   expected.numpy().astype(np.int32))))
    if difference > PIXEL_TOLERANCE:
      raise RuntimeError(
          f'the exported translator disagrees with G_ST (max pixel difference {difference} > '
          f'{PIXEL_TOLERANCE}); nothing was published.')
    agreement['max_abs_pixel_difference'] = difference

  version, path = serving.save_versioned(
      server, os.path.join(ctx.model_dir, TRANSLATOR_DIR), verify=verify)
  print(f'[{STAGE}] pixel G_ST translator → {path}', flush=True)
  return {
      'version': version,
      'path': path,
      'signatures': list(serving.SIGNATURES),
      'content_fraction': source_fraction,
      'outputs': {'serving_default': f'images: uint8 [N, {", ".join(map(str, ctx.image_shape))}]',
                  'serve_bytes': 'images: string [N], PNG'},
      **agreement,
  }
