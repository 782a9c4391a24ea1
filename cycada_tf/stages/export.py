"""Stage `export`: the final target classifier (and G_ST) as versioned SavedModels for serving.

Layout, TF Serving's: `<model_dir>/export/<version>/` holds the classifier of the most adapted
finished stage (feature, else task, else source) and `<model_dir>/export_translator/<version>/`
the pixel stage's G_ST when that stage has finished. A run that has a new model to export adds
version 1 + the largest existing one, so a serving process watching the directory picks up the
new model and older versions stay available for rollback. `<model_dir>/export/metrics.json`
records what was exported and how the exported graph performs; TF Serving ignores non-numeric
entries there.

The signatures (see `cycada_tf.serving`) take raw uint8 pixels or encoded PNG/JPEG and do the
pipeline's preprocessing in the graph. Before a version is renamed into place, the saved graph is
loaded back, its TF Serving warm-up requests are replayed, and it is compared with the Keras
model on a batch, so a model that does not reproduce its
own training-time outputs is never published. The reported `target_test_accuracy` is then the
*loaded SavedModel's* accuracy on the raw target test images, i.e. what a serving client gets,
next to the Keras model's accuracy through the training input pipeline.

Segmentation exports take images of any size and return the class map at the input's
resolution (`serving.SegmenterServer`, run at the training scale `data.resize_width`); the
translator keeps each image's size (any multiple of 4). `target_test_miou` is the SavedModel's
on the raw target test images, beside the Keras model's through the pipeline.

Exporting is idempotent. Each version directory records in `assets.extra/cycada_export.json`
what it was exported from (the stage, its latest checkpoint and a SHA-256 of that checkpoint's
saved values, `trainer.checkpoint_fingerprint`). When the newest version of a model
was exported from exactly what would be exported now, it is kept instead of adding a copy, so
an export that was killed part-way and rerun ends with the same versions and the same
`metrics.json` as one that was not; a retrained stage gets version N + 1. `is_current` says
whether `metrics.json` already describes what would be exported, which is how `--stage=all`
decides to skip this stage. Temporary directories left by a killed save are removed first.
"""

import os
import re

import numpy as np
import tensorflow as tf

from cycada_tf import metrics as metrics_lib
from cycada_tf import serving
from cycada_tf import trainer
from cycada_tf.data import domains
from cycada_tf.data import pipeline
from cycada_tf.data import translated
from cycada_tf.errors import UserError
from cycada_tf.stages import common

STAGE = 'export'
TRANSLATOR_DIR = 'export_translator'
# The saved graph runs the same ops on the same weights; anything above float noise is a bug.
PROBABILITY_TOLERANCE = 1e-5
# Segmentation compares a probability per pixel and class, ~10^5 values per batch against 10^2,
# through deeper nets and a bilinear resize: float noise reaches ~1e-5 (1.07e-5 measured).
SEGMENTATION_PROBABILITY_TOLERANCE = 1e-4
# uint8 outputs may differ by one level where float noise straddles a rounding boundary.
PIXEL_TOLERANCE = 1
_CHECK_BATCH = 8
# Part of what a version records it was exported from: bump it when the serving graph changes,
# so that exporting an unchanged checkpoint again writes a new version with the new graph.
EXPORT_FORMAT = 1


def run(ctx, evaluate_target=True):
  """Exports the latest classifier (and G_ST if the pixel stage finished); returns the metrics.

  A model whose newest version was exported from the same checkpoint is not exported again:
  that version is reused (see the module docstring).

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
  for export_root in (ctx.stage_dir(STAGE), os.path.join(ctx.model_dir, TRANSLATOR_DIR)):
    for stale in serving.remove_stale_temporaries(export_root):
      print(f'[{STAGE}] removed {stale}, left by an export that was killed', flush=True)
  classifier = common.load_classifier(ctx, stage_name, needed_by=STAGE)
  if ctx.is_segmentation:
    return _export_segmenter(ctx, stage_name, classifier, evaluate_target)
  target_fraction = domains.domain_info(ctx.pair.target, ctx.data_dir).content_fraction
  exported_from = _classifier_origin(ctx, stage_name)

  def verify(loaded):
    return {'max_abs_probability_difference': _check_classifier(
        loaded, classifier, ctx.image_shape, target_fraction, ctx.seed)}

  version, path, checks = _publish(
      ctx.stage_dir(STAGE), lambda: serving.ClassifierServer(classifier, ctx.image_shape,
                                                             target_fraction),
      verify, exported_from, f'{stage_name} classifier')
  payload = _network_payload(
      stage_name, version, path, exported_from, checks,
      details={'input_shape': list(ctx.image_shape), 'content_fraction': target_fraction},
      bytes_sizes='sizes may differ',
      outputs={'probabilities': f'float32 [N, {int(ctx.config.model.num_classes)}]',
               'classes': 'int64 [N]'})
  if evaluate_target:
    payload.update(_target_score(ctx, tf.saved_model.load(path), classifier))
  payload['translator'] = _export_translator(ctx) if ctx.is_done('pixel') else None
  return common.write_stage_metrics(ctx, STAGE, payload)


def _network_payload(stage_name, version, path, exported_from, checks, details, bytes_sizes,
                     outputs):
  """export/metrics.json for the task network (classifier or segmenter): where the version is,
  what it was exported from, its signatures' inputs and `outputs`, and the save-time `checks`.
  `details` are the family's own fields; `bytes_sizes` says whether `serve_bytes` images of
  one request may differ in size."""
  return {
      'exported_stage': stage_name,
      'version': version,
      'path': path,
      'exported_from': exported_from,
      'signatures': list(serving.SIGNATURES),
      **details,
      'inputs': {
          'serving_default': 'images: uint8 [N, H, W, C], C in {1, 3}, any H and W',
          'serve_bytes': 'images: string [N], encoded PNG or JPEG (GIF, BMP, WebP: first '
                         f'frame), {bytes_sizes}',
      },
      'outputs': outputs,
      **checks,
  }


def is_current(ctx):
  """True if `<model_dir>/export/metrics.json` describes exactly what `run` would export now.

  That is: the same classifier stage and checkpoint, the same G_ST checkpoint (or none, if the
  pixel stage has not finished), and the exported versions still where metrics.json says.
  `--stage=all` skips the stage only then, so a stage retrained since the last export is
  exported again. Reads files only; a run that would fail (no classifier stage, say) is not
  current, so that `run` reports the failure.
  """
  if not ctx.is_done(STAGE):
    return False
  try:
    classifier_origin = _classifier_origin(ctx, common.latest_classifier_stage(ctx))
    translator_origin = _translator_origin(ctx) if ctx.is_done('pixel') else None
  except UserError:
    return False
  recorded = ctx.read_metrics(STAGE)
  if (recorded.get('exported_from') != classifier_origin or
      not _in_place(recorded, ctx.stage_dir(STAGE))):
    return False
  translator = recorded.get('translator')
  if translator is None:
    return translator_origin is None
  return (translator.get('exported_from') == translator_origin and
          _in_place(translator, os.path.join(ctx.model_dir, TRANSLATOR_DIR)))


def _in_place(part, export_root):
  """True if the version a part of metrics.json names exists where it says, under `export_root`.

  A model_dir that was moved or copied has paths of the old place in its metrics.json; `run`
  rewrites them (reusing the versions) rather than `--stage=all` reporting stale paths.
  """
  path = os.path.join(export_root, str(part.get('version')))
  return part.get('path') == path and os.path.isdir(path)


def _checkpoint_origin(ctx, stage_name):
  """Identifies the checkpoint a model of `stage_name` is restored from, by path and content.

  The hash is of the saved values (`trainer.checkpoint_fingerprint`): it changes whenever any
  weight does, and not when a resumed process merely named its variables differently.
  """
  latest = tf.train.latest_checkpoint(trainer.checkpoint_dir(ctx.stage_dir(stage_name)))
  if latest is None:
    raise UserError(f'no checkpoint in {trainer.checkpoint_dir(ctx.stage_dir(stage_name))}; '
                    f'run `{ctx.command_for(stage_name)}` again.')
  number = re.search(r'-(\d+)$', os.path.basename(latest))
  return {
      'format': EXPORT_FORMAT,
      'stage': stage_name,
      # Relative, so that a model_dir moved elsewhere still recognises its own exports.
      'checkpoint': os.path.relpath(latest, ctx.model_dir),
      'checkpoint_number': int(number.group(1)) if number else None,
      'checkpoint_weights_sha256': trainer.checkpoint_fingerprint(latest),
      'input_shape': list(ctx.image_shape),
  }


def _classifier_origin(ctx, stage_name):
  """What the classifier export is made of: the checkpoint and the target domain's framing."""
  return dict(_checkpoint_origin(ctx, stage_name), content_fraction=domains.domain_info(
      ctx.pair.target, ctx.data_dir).content_fraction)


def _translator_origin(ctx):
  """What the G_ST export is made of: the pixel checkpoint and the source domain's framing."""
  return dict(_checkpoint_origin(ctx, 'pixel'), content_fraction=domains.domain_info(
      ctx.pair.source, ctx.data_dir).content_fraction)


def _publish(export_root, make_server, verify, exported_from, what):
  """(version, path, checks) of `exported_from`'s export: the newest version if it is one, else
  a new version saved from `make_server()`. `checks` are what `verify` found at save time, read
  from the version's record, so a reused version reports exactly what it reported when new."""
  reusable = serving.reusable_version(export_root, exported_from)
  if reusable is not None:
    version, path = reusable
    print(f'[{STAGE}] {what} unchanged since version {version}, kept: {path}', flush=True)
  else:
    version, path = serving.save_versioned(make_server(), export_root, verify=verify,
                                           exported_from=exported_from)
    print(f'[{STAGE}] {what} → {path}', flush=True)
  return version, path, serving.read_record(path)['checks']


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


def _target_score(ctx, loaded, network):
  """The target test score (accuracy, or mIoU): the SavedModel on the raw images, and the Keras
  model through the pipeline.

  The two should agree exactly: a gap means the serving graph preprocesses differently from
  training. Same-sized images go in batches; a folder domain of mixed sizes, and whole street
  scenes (a real pair's differ in size), one at a time. A data problem (say the target domain is
  not prepared on this machine) does not undo the export; it is reported and the scores are left
  out.
  """
  key = ctx.score_key('target_test')
  try:
    dataset = domains.load_domain(ctx.pair.target, 'test', ctx.data_dir)
    keras_score = common.score_on(ctx, network, ctx.pair.target)
  except UserError as e:
    print(f'[{STAGE}] skipped the target test {ctx.score_name}: {e}', flush=True)
    return {key: None, f'{key}_skipped': str(e)}
  fixed_size = dataset.element_spec[0].shape.is_fully_defined() and not ctx.is_segmentation
  output = 'class_map' if ctx.is_segmentation else 'classes'
  serve = loaded.signatures['serving_default']
  matrix = metrics_lib.ConfusionMatrix(int(ctx.config.model.num_classes))
  total = 0
  for images, labels in dataset.batch(int(ctx.config.eval.batch_size) if fixed_size else 1):
    if images.shape[-1] == 4:  # the pipeline drops alpha; the signature accepts 1 or 3 channels
      images = images[..., :3]
    matrix.update(labels.numpy(), serve(images=images)[output].numpy())
    total += int(labels.shape[0])
  return {key: common.score(ctx, matrix.matrix), f'keras_{key}': keras_score,
          'target_test_examples': total}


def _export_segmenter(ctx, stage_name, segmenter, evaluate_target):
  """The segmentation half of `run`: the segmenter (and G_ST), checked and measured."""
  exported_from = _classifier_origin(ctx, stage_name)
  resize_width = int(ctx.config.data.get('resize_width', 0))
  num_classes = int(ctx.config.model.num_classes)

  def verify(loaded):
    # At the training crop size, where serving does not resize when resize_width is 0; with a
    # resize the Keras side is given the same resized input.
    images = _check_images(ctx.image_shape, ctx.seed)
    served = loaded.signatures['serving_default'](images=images)['probabilities'].numpy()
    scaled = pipeline.scale(images)
    if resize_width:
      size = pipeline.resized_size(images.shape[1], images.shape[2], resize_width)
      scaled = tf.image.resize(scaled, size, method='bilinear', antialias=True)
    logits, _ = segmenter(scaled, training=False)
    logits = serving.resize_to(tf.cast(logits, tf.float32), images.shape[1:3])
    difference = float(np.max(np.abs(served - tf.nn.softmax(logits).numpy())))
    if difference > SEGMENTATION_PROBABILITY_TOLERANCE:
      raise RuntimeError(
          f'the exported segmenter disagrees with the Keras model (max probability difference '
          f'{difference:.3g} > {SEGMENTATION_PROBABILITY_TOLERANCE}); nothing was published.')
    return {'max_abs_probability_difference': difference}

  version, path, checks = _publish(
      ctx.stage_dir(STAGE), lambda: serving.SegmenterServer(
          segmenter, num_classes, channels=3, warmup_size=ctx.image_shape[:2],
          resize_width=resize_width),
      verify, exported_from, f'{stage_name} segmenter')
  payload = _network_payload(
      stage_name, version, path, exported_from, checks,
      details={'resize_width': resize_width}, bytes_sizes='one size per request',
      outputs={'class_map': 'uint8 [N, H, W], at the input\'s resolution',
               'probabilities': f'float32 [N, H, W, {num_classes}]'})
  if evaluate_target:
    payload.update(_target_score(ctx, tf.saved_model.load(path), segmenter))
  payload['translator'] = _export_translator(ctx) if ctx.is_done('pixel') else None
  return common.write_stage_metrics(ctx, STAGE, payload)


def _export_translator(ctx):
  """Exports the pixel stage's G_ST (or keeps its unchanged version); returns its metrics.

  Digits: images are resized to the model's size and framed like the source domain's. Segmentation
  keeps each image's size (any multiple of 4): street scenes come in many sizes and the
  generators are fully convolutional.
  """
  generator = common.load_translator(ctx, needed_by=STAGE)
  keep_size = ctx.is_segmentation
  # G_ST translates *source* images, so its inputs are framed like the source domain's.
  source_fraction = domains.domain_info(ctx.pair.source, ctx.data_dir).content_fraction
  exported_from = _translator_origin(ctx)

  def verify(loaded):
    images = _check_images(ctx.image_shape, ctx.seed + 1)
    served = loaded.signatures['serving_default'](images=images)['images']
    inputs = (pipeline.scale(images) if keep_size
              else _keras_inputs(images, ctx.image_shape, source_fraction))
    expected = translated.to_uint8(generator(inputs, training=False))
    difference = int(np.max(np.abs(served.numpy().astype(np.int32) -
                                   expected.numpy().astype(np.int32))))
    if difference > PIXEL_TOLERANCE:
      raise RuntimeError(
          f'the exported translator disagrees with G_ST (max pixel difference {difference} > '
          f'{PIXEL_TOLERANCE}); nothing was published.')
    return {'max_abs_pixel_difference': difference}

  def make_server():
    if keep_size:
      return serving.TranslatorServer(generator, ctx.image_shape, keep_size=True)
    return serving.TranslatorServer(generator, ctx.image_shape, source_fraction)

  version, path, checks = _publish(os.path.join(ctx.model_dir, TRANSLATOR_DIR), make_server,
                                   verify, exported_from, 'pixel G_ST translator')
  if keep_size:
    shapes = {'content_fraction': 1.0,
              'outputs': {'serving_default': 'images: uint8 [N, H, W, 3], H and W multiples of '
                                             '4, as given'}}
  else:
    shapes = {'content_fraction': source_fraction,
              'outputs': {'serving_default': 'images: uint8 '
                                             f'[N, {", ".join(map(str, ctx.image_shape))}]'}}
  shapes['outputs']['serve_bytes'] = 'images_bytes: string [N], PNG (base64 over REST)'
  return {
      'version': version,
      'path': path,
      'exported_from': exported_from,
      'signatures': list(serving.SIGNATURES),
      **shapes,
      **checks,
  }
