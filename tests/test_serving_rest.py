"""The exported signatures as TF Serving serves them: REST bodies, warm-up requests, bad input.

No TF Serving binary runs here, so the REST API's row format is reproduced from its documented
rules (tensorflow_serving/util/json_tensor.cc) on top of the `tensorflow_serving.apis` protos:
the JSON body becomes a `PredictRequest` typed by the SavedModel's SignatureDef, the request is
answered by the loaded signature, and the `PredictResponse` becomes JSON again. The request
bodies are the README's own `curl -d` lines, so the README cannot drift from what works.

The models are tiny and untrained: these tests check plumbing (names, dtypes, shapes, values
against a direct call), not accuracy.
"""

import base64
import io
import json
import os
import re

import keras
import numpy as np
from PIL import Image
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import predict_pb2

from cycada_tf import models
from cycada_tf import serving
from cycada_tf.stages import common
from tests.conftest import REPO
from tests.conftest import session_run

IMAGE_SHAPE = (28, 28, 1)
# The README's names for the two exports (`--model_name=...`).
MODEL_NAMES = ('cycada', 'cycada_translator')


def _digit():
  """A 20×20 uint8 grey image with structure (a ring and a bar), like a drawn digit."""
  y, x = np.mgrid[:20, :20]
  ring = np.abs(np.hypot(y - 9.5, x - 9.5) - 6) < 1.5
  bar = (np.abs(x - 9.5) < 1.5) & (y > 4)
  return np.where(ring | bar, 255, 0).astype(np.uint8)


def _encode(array, image_format, **options):
  buffer = io.BytesIO()
  Image.fromarray(np.squeeze(array)).save(buffer, format=image_format, **options)
  return buffer.getvalue()


def _readme_requests():
  """(model name, JSON body) of every `curl -d` in the README's Serving section, in order.

  A shell splice `'"$(base64 -w0 FILE)"'` inside a body is replaced by FILE's base64, which is
  what the shell would send; the only FILE the README names is `digit.png`, `_digit()` here.
  """
  with open(os.path.join(REPO, 'README.md')) as f:
    readme = f.read()
  section = readme[readme.index('## Serving\n'):readme.index('## TensorBoard\n')]
  commands = section.replace('\\\n', ' ')
  found = re.findall(r"^curl -d '(.*)' +http://localhost:\d+/v1/models/(\w+):predict$",
                     commands, flags=re.MULTILINE)
  files = {'digit.png': base64.b64encode(_encode(_digit(), 'PNG')).decode()}

  def splice(match):
    return files[match.group(1)]

  return [(model, re.sub(r"'\"\$\(base64 -w0 ([\w.]+)\)\"'", splice, body))
          for body, model in found]


def _signature_defs(version_dir):
  """The `serve` MetaGraph's SignatureDefs, read from saved_model.pb as TF Serving reads them."""
  with open(os.path.join(version_dir, 'saved_model.pb'), 'rb') as f:
    saved_model = saved_model_pb2.SavedModel.FromString(f.read())
  (meta_graph,) = [m for m in saved_model.meta_graphs if 'serve' in m.meta_info_def.tags]
  return meta_graph.signature_def


def _is_base64_object(value):
  return isinstance(value, dict) and list(value) == ['b64'] and isinstance(value['b64'], str)


def _typed(value, dtype):
  """A JSON value (nested lists) as TF Serving types it for a tensor of `dtype`."""
  if isinstance(value, list):
    return [_typed(item, dtype) for item in value]
  if dtype == tf.string:
    if _is_base64_object(value):
      return base64.b64decode(value['b64'], validate=True)
    assert isinstance(value, str), f'{value!r} is not a string'
    return value.encode()
  if dtype.is_integer:
    assert isinstance(value, int) and not isinstance(value, bool), f'{value!r} is no {dtype.name}'
    assert dtype.min <= value <= dtype.max, f'{value} is out of range for {dtype.name}'
  else:
    assert isinstance(value, (int, float)) and not isinstance(value, bool), value
  return value


def rest_request(body, signature_defs):
  """A REST `:predict` body in row format → the `PredictRequest` TF Serving makes of it.

  `instances` holds one entry per example, batched along a new axis 0; with a single input an
  entry is that input's value, otherwise an object keyed by input name. `{"b64": ...}` is the
  decoded bytes of a DT_STRING element. Every dtype comes from the SignatureDef's TensorInfo.
  """
  document = json.loads(body)
  request = predict_pb2.PredictRequest()
  request.model_spec.signature_name = document.get('signature_name', 'serving_default')
  signature = signature_defs[request.model_spec.signature_name]
  instances = document['instances']
  assert isinstance(instances, list) and instances, 'instances must be a non-empty list'
  named = isinstance(instances[0], dict) and not _is_base64_object(instances[0])
  assert named or len(signature.inputs) == 1, 'several inputs need an object per instance'
  columns = {}
  for instance in instances:
    items = instance.items() if named else [(next(iter(signature.inputs)), instance)]
    for alias, value in items:
      dtype = tf.dtypes.as_dtype(signature.inputs[alias].dtype)
      typed = _typed(value, dtype)
      # np.array refuses ragged lists, as TF Serving refuses them.
      columns.setdefault(alias, []).append(
          np.array(typed, dtype=object if dtype == tf.string else dtype.as_numpy_dtype))
  assert set(columns) == set(signature.inputs), 'every input needs a value'
  for alias, values in columns.items():
    assert len({v.shape for v in values}) == 1, f'the instances of {alias!r} differ in shape'
    request.inputs[alias].CopyFrom(tf.make_tensor_proto(
        np.stack(values), dtype=tf.dtypes.as_dtype(signature.inputs[alias].dtype)))
  return request


def _jsonable(alias, value):
  """One output element (an ndarray, or a leaf of one) as TF Serving writes it into the JSON."""
  if isinstance(value, np.ndarray) and value.ndim:
    return [_jsonable(alias, item) for item in value]
  if isinstance(value, np.ndarray):
    value = value.item()
  if isinstance(value, bytes):  # DT_STRING
    if alias.endswith('_bytes'):
      return {'b64': base64.b64encode(value).decode()}
    try:
      return value.decode('utf-8')
    except UnicodeDecodeError:
      raise AssertionError(
          f'output {alias!r} is a string of raw bytes: TF Serving base64-encodes only outputs '
          f'named *_bytes and writes this one into the JSON as it is, so the response is not '
          f'valid JSON') from None
  return value.item() if isinstance(value, np.generic) else value


def rest_response(response):
  """A `PredictResponse` → the row-format JSON text TF Serving sends back.

  `predictions` has one entry per example (axis 0 of every output): an object keyed by output
  name, or the bare value when the signature has a single output.
  """
  outputs = {alias: tf.make_ndarray(proto) for alias, proto in response.outputs.items()}
  (batch,) = {value.shape[0] for value in outputs.values()}
  predictions = []
  for i in range(batch):
    row = {alias: _jsonable(alias, value[i]) for alias, value in outputs.items()}
    predictions.append(row if len(row) > 1 else next(iter(row.values())))
  return json.dumps({'predictions': predictions}, allow_nan=False)


def answer(loaded, request):
  """The `PredictResponse` TF Serving's Predict gives: inputs fed by alias, every output."""
  signature = loaded.signatures[request.model_spec.signature_name or 'serving_default']
  outputs = signature(**{alias: tf.constant(tf.make_ndarray(proto))
                         for alias, proto in request.inputs.items()})
  response = predict_pb2.PredictResponse()
  response.model_spec.CopyFrom(request.model_spec)
  for alias, tensor in outputs.items():
    response.outputs[alias].CopyFrom(tf.make_tensor_proto(tensor.numpy()))
  return response


def rest_predict(version_dir, loaded, body):
  """POST `body` to `/v1/models/<name>:predict` of `version_dir`; returns (request, JSON)."""
  request = rest_request(body, _signature_defs(version_dir))
  return request, json.loads(rest_response(answer(loaded, request)))


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
  """A tiny LeNet and a tiny digit G_ST, each saved as version 1 as `export` saves them."""
  root = tmp_path_factory.mktemp('serving')
  keras.utils.set_random_seed(0)
  classifier = common.build_network(models.build_classifier('lenet', 10), IMAGE_SHAPE)
  generator = common.build_network(models.build_generator('digit', 1, filters=8), IMAGE_SHAPE)
  _, classifier_dir = serving.save_versioned(
      serving.ClassifierServer(classifier, IMAGE_SHAPE), str(root / 'export'))
  _, translator_dir = serving.save_versioned(
      serving.TranslatorServer(generator, IMAGE_SHAPE, 20 / 28), str(root / 'export_translator'))
  return {'cycada': (classifier_dir, tf.saved_model.load(classifier_dir)),
          'cycada_translator': (translator_dir, tf.saved_model.load(translator_dir))}


def _spec(tensor_info):
  shape = tensor_info.tensor_shape
  return (tf.dtypes.as_dtype(tensor_info.dtype).name,
          None if shape.unknown_rank else tuple(d.size for d in shape.dim))


def test_signature_defs_are_what_tf_serving_reads(exported):
  classes = {'probabilities': ('float32', (-1, 10)), 'classes': ('int64', (-1,))}
  expected = {
      'cycada': {
          'serving_default': ({'images': ('uint8', None)}, classes),
          'serve_bytes': ({'images': ('string', None)}, classes),
      },
      'cycada_translator': {
          'serving_default': ({'images': ('uint8', None)},
                              {'images': ('uint8', (-1,) + IMAGE_SHAPE)}),
          # `_bytes`: the only way TF Serving's REST API base64-encodes a string output.
          'serve_bytes': ({'images': ('string', None)}, {'images_bytes': ('string', (-1,))}),
      },
  }
  for name, signatures in expected.items():
    defs = _signature_defs(exported[name][0])
    for signature, (inputs, outputs) in signatures.items():
      assert defs[signature].method_name == 'tensorflow/serving/predict'
      assert {k: _spec(v) for k, v in defs[signature].inputs.items()} == inputs
      assert {k: _spec(v) for k, v in defs[signature].outputs.items()} == outputs


def test_readme_shows_a_request_for_every_signature():
  requests = _readme_requests()
  signatures = [(model, json.loads(body).get('signature_name', 'serving_default'))
                for model, body in requests]
  assert sorted(signatures) == sorted((m, s) for m in MODEL_NAMES for s in serving.SIGNATURES)


@pytest.mark.parametrize('index', range(4))
def test_readme_request_maps_onto_the_signature(exported, index):
  model, body = _readme_requests()[index]
  version_dir, loaded = exported[model]
  request, answer = rest_predict(version_dir, loaded, body)
  signature = request.model_spec.signature_name
  sent = tf.make_ndarray(request.inputs['images'])
  predictions = answer['predictions']
  assert len(predictions) == sent.shape[0] == 1
  if signature == 'serving_default':
    # [[[[0], [255]], [[255], [0]]]]: one 2×2×1 instance, batched to [1, 2, 2, 1] uint8.
    assert sent.dtype == np.uint8 and sent.shape == (1, 2, 2, 1)
    np.testing.assert_array_equal(sent[0, ..., 0], [[0, 255], [255, 0]])
    pixels = sent
  else:
    assert request.inputs['images'].dtype == tf.string.as_datatype_enum and sent.shape == (1,)
    assert sent[0] == _encode(_digit(), 'PNG')  # the b64 object arrives as the file's bytes
    pixels = tf.io.decode_png(sent[0])[tf.newaxis]
  direct = loaded.signatures['serving_default'](images=tf.constant(pixels))
  if model == 'cycada':
    # Two outputs: one object per instance, keyed by output name.
    assert set(predictions[0]) == {'probabilities', 'classes'}
    np.testing.assert_array_equal(np.float32(predictions[0]['probabilities']),
                                  direct['probabilities'].numpy()[0])
    assert predictions[0]['classes'] == int(direct['classes'].numpy()[0])
    assert sum(predictions[0]['probabilities']) == pytest.approx(1.0, abs=1e-5)
  elif signature == 'serving_default':
    # A single output: the bare [H, W, C] value per instance.
    image = np.array(predictions[0])
    assert image.shape == IMAGE_SHAPE and image.min() >= 0 and image.max() <= 255
    np.testing.assert_array_equal(image, direct['images'].numpy()[0])
  else:
    (png,) = predictions
    assert list(png) == ['b64']
    decoded = tf.io.decode_png(base64.b64decode(png['b64'])).numpy()
    np.testing.assert_array_equal(decoded, direct['images'].numpy()[0])


def test_rest_instances_of_different_shapes_are_refused(exported):
  version_dir, _ = exported['cycada']
  body = json.dumps({'instances': [np.zeros((2, 2, 1), int).tolist(),
                                   np.zeros((3, 3, 1), int).tolist()]})
  with pytest.raises((AssertionError, ValueError)):
    rest_request(body, _signature_defs(version_dir))


@pytest.mark.parametrize('model', MODEL_NAMES)
def test_warmup_requests_replay_against_the_loaded_signatures(exported, model):
  version_dir, loaded = exported[model]
  logs = serving.read_warmup_requests(version_dir)
  # One request per signature, a single image at the model's size, as a client would send.
  assert [log.WhichOneof('log_type') for log in logs] == ['predict_log'] * 2
  requests = [log.predict_log.request for log in logs]
  assert [r.model_spec.signature_name for r in requests] == list(serving.SIGNATURES)
  pixels, encoded = (tf.make_ndarray(r.inputs['images']) for r in requests)
  assert pixels.dtype == np.uint8 and pixels.shape == (1,) + IMAGE_SHAPE
  assert encoded.shape == (1,)
  np.testing.assert_array_equal(tf.io.decode_png(encoded[0]).numpy(), pixels[0])
  defs = _signature_defs(version_dir)
  for request in requests:
    signature = request.model_spec.signature_name
    response = answer(loaded, request)
    assert set(response.outputs) == set(defs[signature].outputs)
    # What export replays before it publishes a version gives the same answer.
    replayed = serving.predict(loaded, request)
    for alias, proto in response.outputs.items():
      np.testing.assert_array_equal(tf.make_ndarray(replayed.outputs[alias]),
                                    tf.make_ndarray(proto))
    # TF Serving replays them through a TF1 session; so must they run there.
    session = session_run(version_dir, signature,
                           images=tf.make_ndarray(request.inputs['images']))
    assert set(session) == set(defs[signature].outputs)
    assert rest_response(response)  # and their answers are valid REST JSON


@pytest.mark.parametrize('model', MODEL_NAMES)
@pytest.mark.parametrize('shape', [(), (1, 1)])
def test_serve_bytes_without_a_vector_names_the_expected_input(exported, model, shape):
  version_dir, loaded = exported[model]
  png = np.reshape(np.array([_encode(_digit(), 'PNG')], dtype=object), shape)
  expected = re.escape(serving.BYTES_ERROR)
  with pytest.raises(tf.errors.InvalidArgumentError, match=expected):
    loaded.signatures['serve_bytes'](images=tf.constant(png))
  with pytest.raises(tf.errors.InvalidArgumentError, match=expected):
    session_run(version_dir, 'serve_bytes', images=png)


@pytest.mark.parametrize('shape', [(28, 28, 1), (1, 28, 28, 2)])
def test_serving_default_with_a_wrong_shape_names_the_expected_input(exported, shape):
  version_dir, loaded = exported['cycada']
  expected = re.escape(serving.INPUT_ERROR)
  with pytest.raises(tf.errors.InvalidArgumentError, match=expected):
    loaded.signatures['serving_default'](images=tf.zeros(shape, tf.uint8))
  with pytest.raises(tf.errors.InvalidArgumentError, match=expected):
    session_run(version_dir, 'serving_default', images=np.zeros(shape, np.uint8))


def _animated_gif(first, second):
  buffer = io.BytesIO()
  Image.fromarray(first).save(buffer, format='GIF', save_all=True,
                              append_images=[Image.fromarray(second)])
  return buffer.getvalue()


def test_serve_bytes_decodes_gif_bmp_and_webp_for_a_grey_model(exported):
  # The model wants 1 channel, which TF's GIF, BMP and WebP decoders cannot give: those are
  # decoded to RGB and converted like RGB pixels, so each answer equals serving_default's on the
  # RGB image (an animated GIF's first frame). PNG still decodes straight to grey.
  digit = _digit()
  first, second = digit, 255 - digit
  rgb_first = np.repeat(first[..., None], 3, axis=-1)
  files = [_animated_gif(first, second), _encode(first, 'BMP'),
           _encode(first, 'WEBP', lossless=True), _encode(first, 'PNG')]
  for model in MODEL_NAMES:
    _, loaded = exported[model]
    served = loaded.signatures['serve_bytes'](images=tf.constant(files))
    from_pixels = loaded.signatures['serving_default']
    rgb = from_pixels(images=tf.constant(rgb_first[None]))
    grey = from_pixels(images=tf.constant(first[None, ..., None]))
    other_frame = from_pixels(images=tf.constant(np.repeat(second[None, ..., None], 3, -1)))
    if model == 'cycada':
      probabilities = served['probabilities'].numpy()
      np.testing.assert_allclose(probabilities[:3], np.repeat(rgb['probabilities'], 3, 0),
                                 atol=1e-6)
      np.testing.assert_allclose(probabilities[3], grey['probabilities'][0], atol=1e-6)
    else:
      images = [tf.io.decode_png(png).numpy() for png in served['images_bytes'].numpy()]
      for image in images[:3]:
        np.testing.assert_array_equal(image, rgb['images'][0])
      np.testing.assert_array_equal(images[3], grey['images'][0])
      assert not np.array_equal(images[0], other_frame['images'][0])  # the first frame


def test_stale_temporaries_are_removed(tmp_path):
  (tmp_path / '1').mkdir()
  (tmp_path / '.tmp-2-4242' / 'variables').mkdir(parents=True)
  (tmp_path / '.tmp-2-4242' / 'saved_model.pb').write_bytes(b'half')
  (tmp_path / 'metrics.json').write_text('{}')
  removed = serving.remove_stale_temporaries(str(tmp_path))
  assert removed == [str(tmp_path / '.tmp-2-4242')]
  assert sorted(os.listdir(tmp_path)) == ['1', 'metrics.json']
