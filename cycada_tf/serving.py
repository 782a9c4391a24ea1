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
  serve_bytes(images: string [N], encoded PNG/JPEG, sizes may differ within a request)
      -> the same outputs.
Signatures of the translator SavedModel (G_ST: source rendered in target style):
  serving_default(images: uint8 [N, H, W, C]) -> images: uint8 [N, H_model, W_model, C_model]
  serve_bytes(images: string [N]) -> images: string [N] of PNG-encoded translations.

Bad input is rejected by the graph with a message that says what is expected:
  - a wrong dtype (say float32 into `serving_default`) is refused by the signature itself before
    the graph runs: `InvalidArgumentError: ... expected to be a uint8 tensor but is a float tensor`;
  - a wrong rank or channel count fails an in-graph assertion, `InvalidArgumentError` containing
    `INPUT_ERROR` and the received shape.
The uint8 input is declared with unknown rank rather than [None, None, None, None] on purpose:
with a declared rank of 4 TensorFlow proves the rank check true while tracing and drops it, and
neither the Python signature wrapper nor TF Serving checks shapes of fed tensors, so a rank-3
image then dies deep in the graph with "slice index 3 of dimension 0 out of bounds" instead of
the message above.
"""

import os
import re
import shutil

import tensorflow as tf

from cycada_tf.data import pipeline
from cycada_tf.data import translated

INPUT_ERROR = 'expected uint8 images [N, H, W, C] with C in {1, 3}'
BYTES_ERROR = 'expected a string vector [N] of encoded PNG/JPEG images'
SIGNATURES = ('serving_default', 'serve_bytes')
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


def check_images(images):
  """Returns `images` as [N, H, W, C] once rank 4 and C ∈ {1, 3} are checked at run time.

  The checks feed a `tf.cond` whose output everything downstream consumes, i.e. a data
  dependency rather than a control dependency: graph optimisation of the saved function was
  seen to let `tf.shape(images)[3]` run ahead of a control-dependent assertion, so a rank-3
  request failed with "slice index 3 of dimension 0 out of bounds" instead of `INPUT_ERROR`.
  The rank and channel count are computed so that neither can fail on a wrong rank.
  """
  shape = tf.shape(images)
  channels = tf.concat([shape, tf.zeros([4], tf.int32)], axis=0)[3]
  ok = tf.logical_and(tf.equal(tf.rank(images), 4),
                      tf.logical_or(tf.equal(channels, 1), tf.equal(channels, 3)))

  def rejected():
    with tf.control_dependencies([tf.debugging.Assert(ok, [INPUT_ERROR, 'got shape', shape])]):
      return tf.zeros([0, 0, 0, 1], tf.uint8)

  return tf.cond(ok, lambda: tf.ensure_shape(images, [None, None, None, None]), rejected)


def decode_and_preprocess(encoded, image_shape, content_fraction=1.0):
  """string [N] of PNG/JPEG → float32 [N, H, W, C] in [-1, 1], each image resized on its own.

  Decoding happens per element inside `tf.map_fn` because images in one request may have
  different sizes, which no batched tensor could hold before the resize.
  """
  with tf.control_dependencies([tf.debugging.assert_rank(encoded, 1, message=BYTES_ERROR)]):
    encoded = tf.identity(encoded)
  height, width, channels = (int(d) for d in image_shape)

  def one(data):
    image = tf.io.decode_image(data, channels=channels, dtype=tf.uint8, expand_animations=False)
    return pipeline.preprocess(tf.ensure_shape(image, [None, None, channels]), image_shape,
                               content_fraction)

  return tf.map_fn(one, encoded,
                   fn_output_signature=tf.TensorSpec([height, width, channels], tf.float32))


class _Server(tf.Module):
  """The two signatures every exported product has, around one Keras model's forward pass.

  `serving_default` takes uint8 pixels, `serve_bytes` encoded images; both turn their input into
  the model's float32 [N, H, W, C] in [-1, 1] and hand it to `respond` (a dict of outputs);
  `serve_bytes` then passes the result through `encode`.

  The module tracks the model's underlying `tf.Variable`s, not the Keras model itself. Saving a
  Keras 3 model as an attribute stores each weight twice (once per wrapper), and the session-based
  loader that TF Serving and `saved_model_cli run` use then fails with "Could not find variable
  <layer>/bias" (keras-team/keras#20095): it restores the Keras wrappers, which it does not know
  how to assign, and leaves the graph's variables uninitialised. The functions close over the
  model, whose ops read exactly those `tf.Variable`s.
  """

  def __init__(self, name, model, respond, image_shape, content_fraction, encode=None):
    super().__init__(name=name)
    self.image_shape = tuple(int(d) for d in image_shape)
    self.content_fraction = float(content_fraction)
    self.model_variables = [variable.value for variable in model.variables]
    encode = encode or (lambda outputs: outputs)

    def from_pixels(images):
      return respond(preprocess(check_images(images), self.image_shape, self.content_fraction))

    def from_bytes(images):
      return encode(respond(decode_and_preprocess(images, self.image_shape,
                                                  self.content_fraction)))

    self.serving_default = tf.function(
        from_pixels, input_signature=[tf.TensorSpec(None, tf.uint8, name='images')])
    self.serve_bytes = tf.function(
        from_bytes, input_signature=[tf.TensorSpec([None], tf.string, name='images')])

  def signatures(self):
    """Concrete functions by signature name, for `tf.saved_model.save(signatures=...)`."""
    return {'serving_default': self.serving_default.get_concrete_function(),
            'serve_bytes': self.serve_bytes.get_concrete_function()}


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
  """G_ST: images → `images`, uint8 [N, H, W, C] of the model's size, or PNG strings [N].

  The pixels are `translated.to_uint8(G_ST(x))`, exactly what the `task` stage trains on.
  """

  def __init__(self, generator, image_shape, content_fraction=1.0):

    def respond(images):
      return {'images': translated.to_uint8(
          tf.cast(generator(images, training=False), tf.float32))}

    def encode(outputs):
      return {'images': tf.map_fn(tf.io.encode_png, outputs['images'],
                                  fn_output_signature=tf.TensorSpec([], tf.string))}

    super().__init__('translator_server', generator, respond, image_shape, content_fraction,
                     encode=encode)


def existing_versions(export_root):
  """The integer version directories under `export_root` (TF Serving ignores anything else)."""
  if not os.path.isdir(export_root):
    return []
  return sorted(int(name) for name in os.listdir(export_root)
                if _VERSION_DIR.match(name) and os.path.isdir(os.path.join(export_root, name)))


def save_versioned(server, export_root, verify=None):
  """Saves `server` as `<export_root>/<1 + largest version>/`; returns (version, path).

  The SavedModel is written into a hidden temporary directory beside the version directories,
  checked by `verify(temp_path)` if given, and only then renamed into place, so TF Serving,
  which polls `export_root` for new numeric directories, never loads a half-written or
  unverified model. An existing version is never overwritten: `os.rename` onto an existing
  non-empty directory fails instead.
  """
  os.makedirs(export_root, exist_ok=True)
  version = max(existing_versions(export_root), default=0) + 1
  path = os.path.join(export_root, str(version))
  tmp = os.path.join(export_root, f'.tmp-{version}-{os.getpid()}')
  try:
    tf.saved_model.save(server, tmp, signatures=server.signatures())
    if verify is not None:
      verify(tmp)
    os.rename(tmp, path)
  finally:
    if os.path.exists(tmp):
      shutil.rmtree(tmp)
  return version, path
