"""The segmentation exports: a segmenter and a size-keeping translator, saved, loaded and called
at sizes their graphs never saw.

The models are tiny, untrained and fully convolutional: these tests check plumbing (sizes,
dtypes, the pipeline's scaling, the resize of coarse logits, input errors, REST), not accuracy.
"""

import io
import json
import re

import keras
import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from cycada_tf import models
from cycada_tf import serving
from cycada_tf.data import translated
from cycada_tf.stages import common
from tests.conftest import session_run
from tests.test_serving_rest import rest_predict

NUM_CLASSES = 5
# Warm-up sizes: every size a test calls with below differs from them.
WARMUP_SIZE = (16, 24)
TRANSLATOR_SHAPE = (16, 24, 3)
# Odd, and both divisible by 4: sizes no signature was traced for.
SIZES = [(37, 50), (64, 96)]


class TinySegmenter(keras.Model):
  """Two convolutions → (logits [N, h, w, K], features), like the project's segmentation nets.

  With `stride=2` the logits come back at half the input's size (rounded up), as a strided
  net's score map does, so the server has to resize them.
  """

  def __init__(self, num_classes, stride=1, **kwargs):
    super().__init__(**kwargs)
    self.features = keras.layers.Conv2D(8, 3, strides=stride, padding='same', activation='relu')
    self.scores = keras.layers.Conv2D(num_classes, 1)

  def call(self, x, training=False):
    features = self.features(x)
    return self.scores(features), features


def _pixels(size, channels=3, batch=2, seed=0):
  rng = np.random.default_rng(seed)
  return rng.integers(0, 256, (batch, *size, channels), dtype=np.uint8)


def _png(image):
  buffer = io.BytesIO()
  Image.fromarray(np.squeeze(image)).save(buffer, format='PNG')
  return buffer.getvalue()


def _keras_logits(model, images):
  """What the model gives for uint8 `images` scaled like the pipeline, at the input's size."""
  logits, _ = model(tf.cast(images, tf.float32) / 127.5 - 1.0, training=False)
  return tf.image.resize(logits, images.shape[1:3], method='bilinear').numpy()


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
  """Version 1 of a segmenter and of a strided segmenter, as (model, path, loaded)."""
  root = tmp_path_factory.mktemp('serving_segmentation')
  keras.utils.set_random_seed(0)
  found = {}
  for name, stride in (('segmenter', 1), ('strided', 2)):
    model = common.build_network(TinySegmenter(NUM_CLASSES, stride), (8, 8, 3))
    _, path = serving.save_versioned(
        serving.SegmenterServer(model, NUM_CLASSES, channels=3, warmup_size=WARMUP_SIZE),
        str(root / name))
    found[name] = (model, path, tf.saved_model.load(path))
  return found


@pytest.fixture(scope='module')
def translator(tmp_path_factory):
  """Version 1 of a tiny colour G_ST served with `keep_size=True`, as (generator, path, loaded)."""
  keras.utils.set_random_seed(0)
  generator = common.build_network(models.build_generator('digit', 3, filters=4),
                                   TRANSLATOR_SHAPE)
  server = serving.TranslatorServer(generator, TRANSLATOR_SHAPE, keep_size=True)
  _, path = serving.save_versioned(server, str(tmp_path_factory.mktemp('translator')))
  return generator, path, tf.saved_model.load(path)


def _spec(tensor_info):
  shape = tensor_info.tensor_shape
  return (tf.dtypes.as_dtype(tensor_info.dtype).name,
          None if shape.unknown_rank else tuple(d.size for d in shape.dim))


def test_signatures_take_any_size(exported):
  _, _, loaded = exported['segmenter']
  outputs = {'class_map': ('uint8', (-1, -1, -1)),
             'probabilities': ('float32', (-1, -1, -1, NUM_CLASSES))}
  for name in serving.SIGNATURES:
    signature = loaded.signatures[name]
    # Unknown rank in, as every server here declares it (see the serving module docstring).
    (spec,) = signature.structured_input_signature[1].values()
    assert spec.shape.rank is None
    assert {k: (v.dtype.name, tuple(v.shape.as_list()))
            for k, v in signature.structured_outputs.items()} == {
                k: (dtype, tuple(None if d == -1 else d for d in shape))
                for k, (dtype, shape) in outputs.items()}


@pytest.mark.parametrize('size', SIZES)
def test_class_map_is_the_argmax_at_the_input_size(exported, size):
  model, _, loaded = exported['segmenter']
  images = _pixels(size)
  served = loaded.signatures['serving_default'](images=tf.constant(images))
  class_map, probabilities = served['class_map'].numpy(), served['probabilities'].numpy()
  assert class_map.dtype == np.uint8 and class_map.shape == (2, *size)
  assert probabilities.dtype == np.float32 and probabilities.shape == (2, *size, NUM_CLASSES)
  logits, _ = model(tf.cast(images, tf.float32) / 127.5 - 1.0, training=False)
  np.testing.assert_array_equal(class_map, np.argmax(logits.numpy(), axis=-1))
  np.testing.assert_allclose(probabilities, tf.nn.softmax(logits).numpy(), atol=1e-6)
  np.testing.assert_allclose(probabilities.sum(axis=-1), 1.0, atol=1e-5)


@pytest.mark.parametrize('size', SIZES)
def test_coarse_logits_are_resized_before_the_argmax(exported, size):
  model, _, loaded = exported['strided']
  images = _pixels(size, seed=1)
  assert model(tf.zeros((1, *size, 3)))[0].shape[1:3] != size  # the net predicts coarser
  served = loaded.signatures['serving_default'](images=tf.constant(images))
  assert served['class_map'].shape == (2, *size)
  expected = _keras_logits(model, images)
  np.testing.assert_array_equal(served['class_map'].numpy(), np.argmax(expected, axis=-1))
  np.testing.assert_allclose(served['probabilities'].numpy(), tf.nn.softmax(expected).numpy(),
                             atol=1e-6)


def test_grey_images_are_converted_like_the_pipeline(exported):
  _, _, loaded = exported['segmenter']
  grey = _pixels((21, 30), channels=1, seed=2)
  serve = loaded.signatures['serving_default']
  as_grey = serve(images=tf.constant(grey))
  as_rgb = serve(images=tf.constant(np.repeat(grey, 3, axis=-1)))
  np.testing.assert_array_equal(as_grey['class_map'], as_rgb['class_map'])
  np.testing.assert_allclose(as_grey['probabilities'], as_rgb['probabilities'], atol=1e-6)


@pytest.mark.parametrize('name', ['segmenter', 'strided'])
def test_serve_bytes_equals_serving_default_for_png(exported, name):
  _, _, loaded = exported[name]
  images = _pixels(SIZES[0], seed=3)
  served = loaded.signatures['serve_bytes'](images=tf.constant([_png(i) for i in images]))
  direct = loaded.signatures['serving_default'](images=tf.constant(images))
  np.testing.assert_array_equal(served['class_map'], direct['class_map'])
  np.testing.assert_allclose(served['probabilities'], direct['probabilities'], atol=1e-6)


def test_serve_bytes_of_mixed_sizes_names_the_sizes(exported):
  _, path, loaded = exported['segmenter']
  files = np.array([_png(_pixels((8, 12), batch=1)[0]), _png(_pixels((9, 12), batch=1)[0])],
                   dtype=object)
  expected = re.escape(serving.SAME_SIZE_ERROR) + r'.*got sizes \(height, width\)'
  with pytest.raises(tf.errors.InvalidArgumentError, match=expected):
    loaded.signatures['serve_bytes'](images=tf.constant(files))
  with pytest.raises(tf.errors.InvalidArgumentError, match=re.escape(serving.SAME_SIZE_ERROR)):
    session_run(path, 'serve_bytes', images=files)


@pytest.mark.parametrize('signature, value, message', [
    ('serving_default', np.zeros((37, 50, 3), np.uint8), serving.INPUT_ERROR),
    ('serving_default', np.zeros((1, 37, 50, 2), np.uint8), serving.INPUT_ERROR),
    ('serve_bytes', np.array(b'not a vector', dtype=object), serving.BYTES_ERROR),
])
def test_bad_input_names_the_expected_input(exported, signature, value, message):
  _, path, loaded = exported['segmenter']
  with pytest.raises(tf.errors.InvalidArgumentError, match=re.escape(message)):
    loaded.signatures[signature](images=tf.constant(value))
  with pytest.raises(tf.errors.InvalidArgumentError, match=re.escape(message)):
    session_run(path, signature, images=value)


def test_runs_in_a_tf1_session_at_a_new_size(exported):
  # TF Serving runs the graph this way (and replays the warm-up requests this way).
  _, path, loaded = exported['strided']
  images = _pixels(SIZES[1], seed=4)
  session = session_run(path, 'serving_default', images=images)
  direct = loaded.signatures['serving_default'](images=tf.constant(images))
  np.testing.assert_array_equal(session['class_map'], direct['class_map'])
  assert session['probabilities'].shape == (2, *SIZES[1], NUM_CLASSES)


def test_warmup_requests_are_at_the_warmup_size(exported):
  _, path, loaded = exported['segmenter']
  requests = [log.predict_log.request for log in serving.read_warmup_requests(path)]
  assert [r.model_spec.signature_name for r in requests] == list(serving.SIGNATURES)
  assert tf.make_ndarray(requests[0].inputs['images']).shape == (1, *WARMUP_SIZE, 3)
  response = serving.predict(loaded, requests[1])
  assert tf.make_ndarray(response.outputs['class_map']).shape == (1, *WARMUP_SIZE)


def test_rest_row_format(exported):
  _, path, loaded = exported['segmenter']
  image = _pixels((5, 7), batch=1, seed=5)[0]
  body = json.dumps({'instances': [image.tolist()]})
  request, answer = rest_predict(path, loaded, body)
  assert tf.make_ndarray(request.inputs['images']).shape == (1, 5, 7, 3)
  (prediction,) = answer['predictions']
  direct = loaded.signatures['serving_default'](images=tf.constant(image[None]))
  assert np.array(prediction['class_map']).shape == (5, 7)
  np.testing.assert_array_equal(prediction['class_map'], direct['class_map'][0])
  np.testing.assert_array_equal(np.float32(prediction['probabilities']),
                                direct['probabilities'][0])


def test_segmenter_refuses_what_it_cannot_serve():
  model = common.build_network(TinySegmenter(3), (8, 8, 3))
  with pytest.raises(ValueError, match='256'):
    serving.SegmenterServer(model, 300)
  with pytest.raises(ValueError, match='build'):
    serving.SegmenterServer(TinySegmenter(3), 3)
  with pytest.raises(ValueError, match='num_classes=4'):
    serving.SegmenterServer(model, 4).signatures()


@pytest.mark.parametrize('size', [(36, 52), (64, 96)])
def test_translator_keeps_sizes_divisible_by_4(translator, size):
  generator, _, loaded = translator
  images = _pixels(size, seed=6)
  served = loaded.signatures['serving_default'](images=tf.constant(images))['images'].numpy()
  assert served.dtype == np.uint8 and served.shape == (2, *size, 3)
  expected = translated.to_uint8(
      generator(tf.cast(images, tf.float32) / 127.5 - 1.0, training=False)).numpy()
  assert np.max(np.abs(served.astype(np.int32) - expected.astype(np.int32))) <= 1
  pngs = loaded.signatures['serve_bytes'](images=tf.constant([_png(i) for i in images]))
  decoded = np.stack([tf.io.decode_png(png).numpy() for png in pngs['images_bytes'].numpy()])
  np.testing.assert_array_equal(decoded, served)


@pytest.mark.parametrize('size', [(37, 52), (36, 50)])
def test_translator_refuses_sizes_not_divisible_by_4(translator, size):
  _, path, loaded = translator
  images = _pixels(size, batch=1)
  expected = re.escape(serving.SIZE_ERROR)
  with pytest.raises(tf.errors.InvalidArgumentError, match=expected):
    loaded.signatures['serving_default'](images=tf.constant(images))
  with pytest.raises(tf.errors.InvalidArgumentError, match=expected):
    loaded.signatures['serve_bytes'](images=tf.constant([_png(images[0])]))
  with pytest.raises(tf.errors.InvalidArgumentError, match=expected):
    session_run(path, 'serving_default', images=images)


def test_translator_keep_size_refuses_a_content_fraction_or_odd_warmup():
  generator = common.build_network(models.build_generator('digit', 1, filters=4), (28, 28, 1))
  with pytest.raises(ValueError, match='content fraction'):
    serving.TranslatorServer(generator, (28, 28, 1), 20 / 28, keep_size=True)
  with pytest.raises(ValueError, match='multiple of 4'):
    serving.TranslatorServer(generator, (30, 28, 1), keep_size=True)
