"""Serving graphs for the exported products: the target classifier and the G_ST translator.

A SavedModel is used by people who never saw the training pipeline (TF Serving, `saved_model_cli`,
another language's TF binding), so each signature takes what such a user has at hand, raw uint8
pixels of any size or encoded PNG/JPEG bytes, and does the pipeline's preprocessing inside the
graph: `cycada_tf.data.pipeline.preprocess` (grey↔RGB to the model's channels, bilinear
antialiased resize to the model's H×W, the target domain's content fraction, x / 127.5 - 1).
Preprocessing lives in the graph, not in client code, so a served prediction cannot drift from
what was measured at evaluation time.

Signatures of the classifier SavedModel:
  serving_default(images: uint8 [N, H, W, C], C in {1, 3}, any H and W)
      -> probabilities: float32 [N, num_classes], classes: int64 [N]
  serve_bytes(images: string [N], encoded PNG/JPEG (GIF, BMP, WebP: the first frame), sizes may
      differ within a request) -> the same outputs.
Signatures of the translator SavedModel (G_ST: source rendered in target style):
  serving_default(images: uint8 [N, H, W, C]) -> images: uint8 [N, H_model, W_model, C_model]
  serve_bytes(images: string [N]) -> images_bytes: string [N] of PNG-encoded translations.
  With `keep_size=True` (segmentation, where images are not all one size) nothing is resized:
  H and W must be multiples of `SIZE_MULTIPLE` (the generators' two stride-2 stages), the output
  is uint8 [N, H, W, C_model], and the images of one `serve_bytes` request must share a size.
Signatures of the segmenter SavedModel (`SegmenterServer`, any H and W; resized only to
`data.resize_width` when that is set, outputs at the input's resolution):
  serving_default(images: uint8 [N, H, W, C], C in {1, 3})
      -> class_map: uint8 [N, H, W], probabilities: float32 [N, H, W, num_classes]
  serve_bytes(images: string [N], encoded PNG/JPEG/GIF/BMP/WebP, one size per request)
      -> the same outputs.
The PNG output's name ends in `_bytes` because TF Serving's REST API base64-encodes a string
output (`{"b64": ...}`) only when its name does; any other string output is written into the JSON
response as it is, and raw PNG bytes there make the response invalid JSON.

Bad input is rejected by the graph with a message that says what is expected:
  - a wrong dtype (say float32 into `serving_default`) is refused by the signature itself before
    the graph runs: `InvalidArgumentError: ... expected to be a uint8 tensor but is a float tensor`;
  - a wrong rank or channel count fails an in-graph assertion, `InvalidArgumentError` containing
    `INPUT_ERROR` (`BYTES_ERROR` for `serve_bytes`) and the received shape;
  - where the size is kept, a height or width that is not a multiple of `SIZE_MULTIPLE`
    fails with `SIZE_ERROR` (translator with `keep_size`), and encoded images of different sizes
    in one request fail with `SAME_SIZE_ERROR` and the sizes received.
Both inputs are declared with unknown rank rather than [None, None, None, None] or [None] on
purpose: with a declared rank TensorFlow proves the rank check true while tracing and drops it,
and neither the Python signature wrapper nor TF Serving checks shapes of fed tensors, so a rank-3
image then dies deep in the graph with "slice index 3 of dimension 0 out of bounds" (a scalar
string with "slice index 0 of dimension 0 out of bounds") instead of the message above.

Each version directory also carries, in `assets.extra/` (which TF Serving copies nowhere and
otherwise ignores), `tf_serving_warmup_requests`: one `PredictionLog` per signature that TF
Serving runs when it loads the version, so the first real request does not pay for lazy
initialisation; and `cycada_export.json`: what the version was exported from and how it
compared with the Keras model, so that an export of unchanged checkpoints reuses it.
"""

import json
import os
import re
import shutil

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_log_pb2

from cycada_tf.data import pipeline
from cycada_tf.data import translated

INPUT_ERROR = 'expected uint8 images [N, H, W, C] with C in {1, 3}'
BYTES_ERROR = 'expected a string vector [N] of encoded PNG/JPEG images'
# The generators' two stride-2 downsamples and upsamples give back H×W only for multiples of 4.
SIZE_MULTIPLE = 4
SIZE_ERROR = f'expected image height and width divisible by {SIZE_MULTIPLE}'
SAME_SIZE_ERROR = 'expected encoded images of one size per request'
SIGNATURES = ('serving_default', 'serve_bytes')
# TF Serving's fixed names: the folder it reads extras from, and the warm-up file in it.
ASSETS_EXTRA = 'assets.extra'
WARMUP_FILE = 'tf_serving_warmup_requests'
# Ours, beside it: what a version was exported from (see `save_versioned`).
RECORD_FILE = 'cycada_export.json'
TEMP_PREFIX = '.tmp-'
_VERSION_DIR = re.compile(r'^\d+$')


def preprocess(images, image_shape, content_fraction=1.0):
  """uint8 [N, h, w, c] (c ∈ {1, 3} known only at run time) → float32 [N, H, W, C] in [-1, 1].

  Each image goes through `pipeline.preprocess` itself, the function training and evaluation
  use, so a served prediction sees the very pixels an evaluated one did. That function picks its
  channel conversion from the static channel count, so the batch is routed through one of two
  `tf.cond` branches in which the count is pinned to 1 or 3.
  """
  height, width, channels = (int(d) for d in image_shape)
  output_spec = tf.TensorSpec([height, width, channels], tf.float32)

  def with_channels(count):
    def branch():
      pinned = tf.ensure_shape(images, [None, None, None, count])
      return tf.map_fn(lambda image: pipeline.preprocess(image, image_shape, content_fraction),
                       pinned, fn_output_signature=output_spec)
    return branch

  return tf.cond(tf.equal(tf.shape(images)[3], 1), with_channels(1), with_channels(3))


def _checked(tensor, ok, message, shape, details=None):
  """`tensor`, statically of `shape`, if the run-time condition `ok` holds; else a failed assert.

  The assertion's message is `message`, then `details` (a list of strings and tensors; by
  default 'got shape' and the tensor's shape).

  The check feeds a `tf.cond` whose output everything downstream consumes, i.e. a data
  dependency rather than a control dependency: graph optimisation of the saved function was
  seen to let `tf.shape(images)[3]` run ahead of a control-dependent assertion, so a rank-3
  request failed with "slice index 3 of dimension 0 out of bounds" instead of `message`. The
  static shape is set after the `tf.cond`, not by a `tf.ensure_shape` in its true branch: that
  op was seen to run even when the branch was not taken, failing a scalar string with "Shape of
  tensor ... [] is not compatible with expected shape [?]" instead of `message`.
  """

  if details is None:
    details = ['got shape', tf.shape(tensor)]

  def rejected():
    with tf.control_dependencies([tf.debugging.Assert(ok, [message, *details])]):
      return tf.zeros([0] * len(shape), tensor.dtype)

  checked = tf.cond(ok, lambda: tf.identity(tensor), rejected)
  checked.set_shape(shape)
  return checked


def check_images(images):
  """Returns `images` as [N, H, W, C] once rank 4 and C ∈ {1, 3} are checked at run time.

  The rank and channel count are computed so that neither can fail on a wrong rank (see
  `_checked` for why the check must be a data dependency).
  """
  shape = tf.shape(images)
  channels = tf.concat([shape, tf.zeros([4], tf.int32)], axis=0)[3]
  ok = tf.logical_and(tf.equal(tf.rank(images), 4),
                      tf.logical_or(tf.equal(channels, 1), tf.equal(channels, 3)))
  return _checked(images, ok, INPUT_ERROR, [None, None, None, None])


def check_encoded(encoded):
  """Returns `encoded` as a string vector [N] once its rank is checked at run time.

  A scalar string (one image not wrapped in a list) is the usual mistake; `tf.map_fn` would
  otherwise fail on it with "slice index 0 of dimension 0 out of bounds".
  """
  return _checked(encoded, tf.equal(tf.rank(encoded), 1), BYTES_ERROR, [None])


def _decode_one(data, channels, finish):
  """One encoded image → `finish(uint8 [h, w, c])`, a float32 image with `channels` channels.

  PNG and JPEG decode straight to the model's channel count, as they always have. The GIF, BMP
  and WebP decoders only produce colour (asked for grey they fail with "channels must be 0 or 3
  for GIF"), so those are decoded to RGB and `finish` converts them, exactly as
  `pipeline.preprocess` converts a folder domain's images (which are all decoded to RGB). An
  animated GIF gives its first frame.
  """

  def decoded_with(count):
    def branch():
      image = tf.io.decode_image(data, channels=count, dtype=tf.uint8, expand_animations=False)
      return finish(tf.ensure_shape(image, [None, None, count]))
    return branch

  if channels == 3:
    return decoded_with(3)()
  is_png = tf.equal(tf.strings.substr(data, 0, 4), b'\x89PNG')
  return tf.cond(tf.logical_or(is_png, tf.io.is_jpeg(data)), decoded_with(channels),
                 decoded_with(3))


def _decode_and_preprocess_one(data, image_shape, content_fraction):
  """One encoded image → float32 [H, W, C] in [-1, 1], through `pipeline.preprocess`."""
  return _decode_one(data, int(image_shape[-1]),
                     lambda image: pipeline.preprocess(image, image_shape, content_fraction))


def decode_and_preprocess(encoded, image_shape, content_fraction=1.0):
  """string [N] of encoded images → float32 [N, H, W, C] in [-1, 1], each resized on its own.

  Decoding happens per element inside `tf.map_fn` because images in one request may have
  different sizes, which no batched tensor could hold before the resize.
  """
  height, width, channels = (int(d) for d in image_shape)
  return tf.map_fn(
      lambda data: _decode_and_preprocess_one(data, image_shape, content_fraction),
      check_encoded(encoded),
      fn_output_signature=tf.TensorSpec([height, width, channels], tf.float32))


def _scaled(image, channels):
  """uint8 [..., c] → float32 [..., channels] in [-1, 1]: `pipeline.preprocess` without resizing.

  The channel conversion is the pipeline's own function, applied as it applies it (on floats,
  before scaling), so a served pixel equals a trained one.
  """
  return pipeline.scale(pipeline.to_channels(tf.cast(image, tf.float32), channels))


def scale_to_channels(images, channels):
  """uint8 [N, h, w, c] (c ∈ {1, 3} known only at run time) → float32 [N, h, w, channels].

  The size is kept. As in `preprocess`, the batch goes through one of two `tf.cond` branches in
  which the channel count is pinned, because the conversion depends on the static count.
  """

  def with_channels(count):
    return lambda: _scaled(tf.ensure_shape(images, [None, None, None, count]), channels)

  scaled = tf.cond(tf.equal(tf.shape(images)[3], 1), with_channels(1), with_channels(3))
  scaled.set_shape([None, None, None, channels])
  return scaled


def decode_same_size(encoded, channels):
  """string [N] of encoded images, all of one size → float32 [N, h, w, channels] in [-1, 1].

  Without a resize, images of different sizes cannot share a batch tensor, so a request must
  hold images of one size (send different sizes as separate requests). Each image is decoded
  once, into a ragged batch that holds any mix of sizes; the sizes are then checked, and a
  mixed request fails with `SAME_SIZE_ERROR` and the (height, width) of every image instead of
  an error from deep inside the graph.
  """
  image_spec = tf.RaggedTensorSpec([None, None, channels], tf.float32, ragged_rank=1)

  def decode(data):
    image = _decode_one(data, channels, lambda decoded: _scaled(decoded, channels))
    return tf.RaggedTensor.from_tensor(image, ragged_rank=1), tf.shape(image)[:2]

  images, sizes = tf.map_fn(decode, check_encoded(encoded),
                            fn_output_signature=(image_spec, tf.TensorSpec([2], tf.int32)))
  one_size = tf.reduce_all(tf.equal(sizes, sizes[:1]))
  return _checked(images.to_tensor(), one_size, SAME_SIZE_ERROR,
                  [None, None, None, channels], details=['got sizes (height, width)', sizes])


def check_size_multiple(images, multiple=SIZE_MULTIPLE):
  """`images` [N, H, W, C] once H and W are checked at run time to be multiples of `multiple`."""
  size = tf.shape(images)[1:3]
  ok = tf.reduce_all(tf.equal(size % multiple, 0))
  return _checked(images, ok, SIZE_ERROR, images.shape.as_list())


def size_keeping_inputs(channels, multiple=1):
  """(from pixels, from bytes) input functions that keep each request's H×W (see `_Server`).

  With `multiple` > 1 both check that H and W are multiples of it (`SIZE_ERROR`).
  """

  def checked(images):
    return check_size_multiple(images, multiple) if multiple > 1 else images

  def from_pixels(images):
    return checked(scale_to_channels(check_images(images), channels))

  def from_bytes(encoded):
    return checked(decode_same_size(encoded, channels))

  return from_pixels, from_bytes


class _Server(tf.Module):
  """The two signatures every exported product has, around one Keras model's forward pass.

  `serving_default` takes uint8 pixels, `serve_bytes` encoded images; both turn their input into
  the model's float32 [N, H, W, C] in [-1, 1] and hand it to `respond` (a dict of outputs);
  `serve_bytes` then passes the result through `encode`. By default the input is resized to
  `image_shape` (`preprocess`, `decode_and_preprocess`); `inputs`, a pair of functions
  (pixels → model input, encoded bytes → model input) such as `size_keeping_inputs` gives,
  replaces that. `image_shape` is then only the size of the warm-up requests.

  The module tracks the model's underlying `tf.Variable`s, not the Keras model itself. Saving a
  Keras 3 model as an attribute stores each weight twice (once per wrapper), and the session-based
  loader that TF Serving and `saved_model_cli run` use then fails with "Could not find variable
  <layer>/bias" (keras-team/keras#20095): it restores the Keras wrappers, which it does not know
  how to assign, and leaves the graph's variables uninitialised. The functions close over the
  model, whose ops read exactly those `tf.Variable`s.
  """

  def __init__(self, name, model, respond, image_shape, content_fraction, encode=None,
               inputs=None):
    super().__init__(name=name)
    self.image_shape = tuple(int(d) for d in image_shape)
    self.content_fraction = float(content_fraction)
    self.model_variables = [variable.value for variable in model.variables]
    encode = encode or (lambda outputs: outputs)
    pixels_to_inputs, bytes_to_inputs = inputs or (
        lambda images: preprocess(check_images(images), self.image_shape, self.content_fraction),
        lambda images: decode_and_preprocess(images, self.image_shape, self.content_fraction))

    def from_pixels(images):
      return respond(pixels_to_inputs(images))

    def from_bytes(images):
      return encode(respond(bytes_to_inputs(images)))

    self.serving_default = tf.function(
        from_pixels, input_signature=[tf.TensorSpec(None, tf.uint8, name='images')])
    # Unknown rank, not [None]: see the module docstring.
    self.serve_bytes = tf.function(
        from_bytes, input_signature=[tf.TensorSpec(None, tf.string, name='images')])

  def signatures(self):
    """Concrete functions by signature name, for `tf.saved_model.save(signatures=...)`."""
    return {'serving_default': self.serving_default.get_concrete_function(),
            'serve_bytes': self.serve_bytes.get_concrete_function()}

  def warmup_requests(self):
    """One `PredictRequest` per signature: a single image at the model's size, as a client sends.

    The pixels are fixed noise, so re-exporting the same model writes the same file.
    """
    height, width, channels = self.image_shape
    pixels = np.random.default_rng(0).integers(0, 256, (1, height, width, channels),
                                               dtype=np.uint8)
    inputs = {'serving_default': pixels,
              'serve_bytes': np.array([tf.io.encode_png(pixels[0]).numpy()], dtype=object)}
    requests = []
    for name in SIGNATURES:
      # model_spec.name stays empty: TF Serving runs warm-up requests against the version it is
      # loading, whatever name it serves it under, and that name is not known at export time.
      request = predict_pb2.PredictRequest()
      request.model_spec.signature_name = name
      request.inputs['images'].CopyFrom(tf.make_tensor_proto(inputs[name]))
      requests.append(request)
    return requests


class ClassifierServer(_Server):
  """A trained classifier: images → `probabilities` float32 [N, K] and `classes` int64 [N]."""

  def __init__(self, classifier, image_shape, content_fraction=1.0):

    def respond(images):
      logits, _ = classifier(images, training=False)
      logits = tf.cast(logits, tf.float32)
      return {'probabilities': tf.nn.softmax(logits, axis=-1),
              'classes': tf.argmax(logits, axis=-1, output_type=tf.int64)}

    super().__init__('classifier_server', classifier, respond, image_shape, content_fraction)


class TranslatorServer(_Server):
  """G_ST: images → `images`, uint8 [N, H, W, C] of the model's size, or `images_bytes`, PNG [N].

  The pixels are `translated.to_uint8(G_ST(x))`, exactly what the `task` stage trains on. The
  PNG output is named `images_bytes` so that TF Serving's REST API base64-encodes it.

  With `keep_size=True` (segmentation: street scenes come in many sizes and the generators are
  fully convolutional) images are not resized: any H and W that are multiples of
  `SIZE_MULTIPLE` pass through at their own size, others fail with `SIZE_ERROR`, and the images
  of one `serve_bytes` request must share a size. `image_shape` then gives the model's channels
  and the warm-up size only.

  Raises:
    ValueError: with `keep_size`, for a content fraction other than 1 (there is no frame to fit
      the content into) or a warm-up size that is not a multiple of `SIZE_MULTIPLE`.
  """

  def __init__(self, generator, image_shape, content_fraction=1.0, keep_size=False):

    def respond(images):
      return {'images': translated.to_uint8(
          tf.cast(generator(images, training=False), tf.float32))}

    def encode(outputs):
      return {'images_bytes': tf.map_fn(tf.io.encode_png, outputs['images'],
                                        fn_output_signature=tf.TensorSpec([], tf.string))}

    inputs = None
    if keep_size:
      if content_fraction != 1.0:
        raise ValueError(f'keep_size serves images at their own size, so it has no frame for a '
                         f'content fraction of {content_fraction}')
      if any(int(d) % SIZE_MULTIPLE for d in image_shape[:2]):
        raise ValueError(f'the warm-up size {tuple(image_shape[:2])} must be a multiple of '
                         f'{SIZE_MULTIPLE}')
      inputs = size_keeping_inputs(int(image_shape[-1]), SIZE_MULTIPLE)
    super().__init__('translator_server', generator, respond, image_shape, content_fraction,
                     encode=encode, inputs=inputs)


def resize_to(logits, size):
  """float [N, h, w, K] → [N, *size, K], bilinearly, or as it is when already of that size.

  A segmentation net may predict at a fraction of its input's size (FCN's strided score maps,
  a crop's padding); scores are resized before the argmax, so the class map is at the input's
  full resolution, where the labels are evaluated (docs/method.md §4).
  """
  same = tf.reduce_all(tf.equal(tf.shape(logits)[1:3], size))
  resized = tf.cond(same, lambda: tf.identity(logits),
                    lambda: tf.image.resize(logits, size, method='bilinear'))
  resized.set_shape(logits.shape[:1].concatenate([None, None]).concatenate(logits.shape[3:]))
  return resized


class SegmenterServer(_Server):
  """A segmentation net: images of any H×W → `class_map` uint8 [N, H, W] and `probabilities`
  float32 [N, H, W, num_classes], at the input's own resolution.

  Images are never resized to a fixed frame (that would change what each pixel's label refers
  to), only scaled by `resize_width` below when it is set: the pixels are only converted to the
  model's `channels` and scaled to [-1, 1] like the pipeline's. `model(x, training=False)` must
  return (logits [N, h, w, K], features); logits of another size than the input are resized
  bilinearly (`resize_to`) before the softmax and the argmax. `serve_bytes` takes one size per
  request (images of different sizes go in separate requests; see `decode_same_size`). The model
  must be built (see `_Server`); `warmup_size` is the (height, width) of the warm-up requests.

  `resize_width` (the config's `data.resize_width`; 0: none) runs the model at the scale it was
  trained and evaluated at: the scaled image is resized to that width first (`pipeline.
  resized_size`), and the scores come back to the input's resolution as above. Training resizes
  the uint8 image and rounds it, serving resizes the scaled floats, so the two can differ by
  less than one grey level per pixel.

  Raises:
    ValueError: for more than 256 classes (the class map is uint8) or an unbuilt model; when
      the signatures are traced, for logits without `num_classes` channels.
  """

  def __init__(self, model, num_classes, channels=3, warmup_size=(128, 256), resize_width=0):
    num_classes = int(num_classes)
    if not 1 <= num_classes <= 256:
      raise ValueError(f'a uint8 class map holds 1 to 256 classes, not {num_classes}')
    if not model.variables:
      raise ValueError('build the segmentation model (call it once) before serving it')
    self.num_classes = num_classes

    def respond(images):
      model_input = images
      if resize_width:
        size = pipeline.resized_size(tf.shape(images)[1], tf.shape(images)[2], resize_width)
        model_input = tf.image.resize(images, size, method='bilinear', antialias=True)
      logits, _ = model(model_input, training=False)
      logits = tf.cast(logits, tf.float32)
      if logits.shape[-1] != num_classes:
        raise ValueError(f'the model gives {logits.shape[-1]} scores per pixel, not '
                         f'num_classes={num_classes}')
      logits = resize_to(logits, tf.shape(images)[1:3])
      return {'class_map': tf.cast(tf.argmax(logits, axis=-1, output_type=tf.int32), tf.uint8),
              'probabilities': tf.nn.softmax(logits, axis=-1)}

    super().__init__('segmenter_server', model, respond, (*warmup_size, channels), 1.0,
                     inputs=size_keeping_inputs(int(channels)))


def existing_versions(export_root):
  """The integer version directories under `export_root` (TF Serving ignores anything else)."""
  if not os.path.isdir(export_root):
    return []
  return sorted(int(name) for name in os.listdir(export_root)
                if _VERSION_DIR.match(name) and os.path.isdir(os.path.join(export_root, name)))


def remove_stale_temporaries(export_root):
  """Deletes the `.tmp-*` directories a killed export left in `export_root`; returns their paths.

  `save_versioned` removes its temporary directory itself unless the process dies (kill -9, a
  lost machine) while saving. Only one export may run per model_dir at a time (two would race
  for version numbers anyway), so whatever temporary is there at the start of an export is stale.
  """
  if not os.path.isdir(export_root):
    return []
  stale = [os.path.join(export_root, name) for name in sorted(os.listdir(export_root))
           if name.startswith(TEMP_PREFIX)]
  for path in stale:
    if os.path.isdir(path):
      shutil.rmtree(path)
    else:
      os.remove(path)
  return stale


def write_warmup_requests(version_dir, requests):
  """Writes `requests` (PredictRequests) where TF Serving looks for warm-up data."""
  os.makedirs(os.path.join(version_dir, ASSETS_EXTRA), exist_ok=True)
  with tf.io.TFRecordWriter(os.path.join(version_dir, ASSETS_EXTRA, WARMUP_FILE)) as writer:
    for request in requests:
      log = prediction_log_pb2.PredictionLog(
          predict_log=prediction_log_pb2.PredictLog(request=request))
      writer.write(log.SerializeToString())


def read_warmup_requests(version_dir):
  """The `PredictionLog`s of a version's warm-up file, in order."""
  path = os.path.join(version_dir, ASSETS_EXTRA, WARMUP_FILE)
  return [prediction_log_pb2.PredictionLog.FromString(record.numpy())
          for record in tf.data.TFRecordDataset(path)]


def predict(loaded, request):
  """Answers a `PredictRequest` from a `tf.saved_model.load`ed model, as TF Serving's Predict.

  Inputs are fed by their signature alias; every output (or those in `output_filter`) comes
  back as a TensorProto under its alias. Export uses it to replay the warm-up requests before a
  version is published: TF Serving refuses to load a version whose warm-up fails.
  """
  name = request.model_spec.signature_name or 'serving_default'
  if name not in loaded.signatures:
    raise ValueError(f'signature {name!r} not found; the model has '
                     f'{", ".join(sorted(loaded.signatures))}.')
  inputs = {alias: tf.constant(tf.make_ndarray(proto)) for alias, proto in request.inputs.items()}
  outputs = loaded.signatures[name](**inputs)
  response = predict_pb2.PredictResponse()
  response.model_spec.CopyFrom(request.model_spec)
  response.model_spec.signature_name = name
  for alias, tensor in outputs.items():
    if not request.output_filter or alias in request.output_filter:
      response.outputs[alias].CopyFrom(tf.make_tensor_proto(tensor.numpy()))
  return response


def read_record(version_dir):
  """The `cycada_export.json` of a version directory, or None if it has none (older exports)."""
  path = os.path.join(version_dir, ASSETS_EXTRA, RECORD_FILE)
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    return json.load(f)


def reusable_version(export_root, exported_from):
  """(version, path) of the newest version if it was exported from `exported_from`, else None.

  Only the newest version counts: it is the one TF Serving serves, and re-exporting the same
  model must not hide a newer, different one behind an older copy.
  """
  versions = existing_versions(export_root)
  if not versions:
    return None
  path = os.path.join(export_root, str(versions[-1]))
  record = read_record(path)
  if record is None or record.get('exported_from') != exported_from:
    return None
  return versions[-1], path


def save_versioned(server, export_root, verify=None, exported_from=None):
  """Saves `server` as `<export_root>/<1 + largest version>/`; returns (version, path).

  The SavedModel and its `assets.extra/` (warm-up requests, and a record of `exported_from`
  and of what `verify` returned) are written into a hidden temporary directory beside the
  version directories. There it is loaded back, its warm-up requests are replayed and
  `verify(loaded)` checks it (returning a dict of check results, or None); only then is it
  renamed into place. So TF Serving, which polls `export_root` for new numeric directories,
  never loads a half-written or unverified model, and a version with a record is always
  complete. An existing version is never overwritten: `os.rename` onto an existing non-empty
  directory fails instead.
  """
  os.makedirs(export_root, exist_ok=True)
  version = max(existing_versions(export_root), default=0) + 1
  path = os.path.join(export_root, str(version))
  tmp = os.path.join(export_root, f'{TEMP_PREFIX}{version}-{os.getpid()}')
  try:
    tf.saved_model.save(server, tmp, signatures=server.signatures())
    write_warmup_requests(tmp, server.warmup_requests())
    loaded = tf.saved_model.load(tmp)
    for log in read_warmup_requests(tmp):
      predict(loaded, log.predict_log.request)
    checks = verify(loaded) if verify is not None else None
    record = {'exported_from': exported_from, 'checks': checks or {}}
    with open(os.path.join(tmp, ASSETS_EXTRA, RECORD_FILE), 'w') as f:
      json.dump(record, f, indent=2, sort_keys=True)
      f.write('\n')
    os.rename(tmp, path)
  finally:
    if os.path.exists(tmp):
      shutil.rmtree(tmp)
  return version, path
