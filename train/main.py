r"""The command line: `python -m train.main --stage=STAGE --dataset=PAIR [--config=...]`.

With no flags it runs the whole pipeline (`--stage=all`) on the offline default pair `uci_mnist`
into `runs/uci_mnist`. Config values come from the pair's file in `configs/` (or `--config`) and
are overridden with `--config.<section>.<name>=value`, e.g. `--config.source.epochs=5`.
A custom pair (`--source/--target`) is resized to `--config.data.image_size/channels` if given,
else to its first `folder:` domain's image shape (printed), else to the config's default.
Errors in the user's input print one line and exit with code 2.
"""

import importlib
import os

# TensorFlow's C++ start-up chatter hides the progress lines; errors still show.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import flags

from train import cli

_CONFIGS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                            'configs')

FLAGS = flags.FLAGS
flags.DEFINE_string('stage', 'all', 'Stage to run: source, target_only, pixel, task, feature, '
                    'eval, export, or all.')
cli.define_pair_flags()
flags.DEFINE_string('model_dir', None, 'Where stages write (default runs/<pair>).')
flags.DEFINE_integer('seed', None, 'Random seed; overrides config.seed.')
flags.DEFINE_string('eval_stage', None, 'With --stage=eval: which stage to evaluate '
                    '(default: the latest of feature, task, source).')
flags.DEFINE_string('strategy', 'auto', 'auto, one_device, mirrored or multi_worker.')
flags.DEFINE_integer('cpu_replicas', 0, 'Split the CPU into N logical devices and mirror over '
                     'them (N > 1).')
cli.define_config_file('config', cli.default_config_file(_CONFIGS_DIR),
                       'Config file (default: the pair\'s file in configs/).')

DEFAULT_DATASET = 'uci_mnist'


def load_config(pair):
  """The config: --config if given, else the pair's own file; then every --config.x override."""
  if FLAGS['config'].present:
    return FLAGS.config
  config = importlib.import_module(f'configs.{pair.config}').get_config()
  return apply_overrides(config, command_line_overrides())


def command_line_overrides():
  """{'section.key': value} of every --config.section.key=value on the command line."""
  return {name[len('config.'):]: FLAGS[name].value for name in FLAGS
          if name.startswith('config.') and FLAGS[name].present}


def explicit_settings(config):
  """The dotted config paths the command line decided (every one for --config=FILE)."""
  from cycada_tf import preflight  # pylint: disable=g-import-not-at-top
  explicit = set(command_line_overrides())
  if FLAGS['config'].present:
    explicit.update(preflight.flat_settings(config))
  if FLAGS.seed is not None:
    explicit.add('seed')
  return explicit


def apply_overrides(config, overrides):
  """Sets each dotted `path` of `overrides` (e.g. 'pixel.epochs') in `config`; returns it."""
  for path, value in overrides.items():
    node = config
    *parents, leaf = path.split('.')
    for part in parents:
      node = node[part]
    node[leaf] = value
  return config


def custom_image_shape(config):
  """A custom pair's shape: --config.data.* if passed, else a folder domain's, else config's."""
  from cycada_tf.data import pairs  # pylint: disable=g-import-not-at-top

  def given(name):  # only a flag on the command line beats the folder's images
    flag = f'config.data.{name}'  # config_flags defines it only when it is passed
    return config.data[name] if flag in FLAGS and FLAGS[flag].present else None

  data = config.data
  shape, note = pairs.custom_image_shape(
      FLAGS.source, FLAGS.target, image_size=given('image_size'), channels=given('channels'),
      default=(data.image_size, data.image_size, data.channels))
  if note:
    print(f'[main] {note}', flush=True)
  return shape


def _kernels_line(config, strategy):
  """The kernel path for the start-up line, with the bf16 filter gradient where it applies."""
  from cycada_tf import kernels  # pylint: disable=g-import-not-at-top
  path = kernels.resolve(config.train.get('kernels', 'auto'), strategy)
  if path == 'cpu_tuned' and config.train.get('precision', 'fp32') == 'bf16':
    choice = kernels.resolve_filter_gradient(config.train.get('filter_gradient', 'auto'))
    path += f' (bf16 filter gradient {choice})'
  return path


def build_context(training_run=True, check_data=True):
  """Parses and validates every flag into a stage Context (no TensorFlow work yet).

  `training_run=False` (`train.bench`, which trains nothing into model_dir) neither creates
  model_dir nor reads the settings saved there. `check_data=False` (the bench's step mode,
  which feeds synthetic batches) does not look at the data either, so a pair whose data is not
  on this machine can still be benchmarked.
  """
  from cycada_tf import stage_table
  stage_table.validate_stage(FLAGS.stage)  # before TensorFlow loads: a typo fails at once

  # Imported here so `--help` and flag errors stay fast.
  import keras
  import tensorflow as tf
  import tensorflow_datasets as tfds

  from cycada_tf import distribute
  from cycada_tf import kernels
  from cycada_tf import precision
  from cycada_tf import preflight
  from cycada_tf.data import pairs
  from cycada_tf.stages import common
  from cycada_tf import workflow

  dataset = FLAGS.dataset
  if dataset is None and FLAGS.source is None and FLAGS.target is None:
    dataset = DEFAULT_DATASET
  # Custom pairs take their image shape from the flags, a folder's images or the config (see
  # `custom_image_shape`); resolve once to find the config file.
  pair = pairs.resolve_pair(dataset, FLAGS.source, FLAGS.target, image_shape=(28, 28, 1))
  config = load_config(pair)
  if FLAGS.seed is not None:
    config.seed = FLAGS.seed
  model_dir = FLAGS.model_dir or os.path.join('runs', pair.name.replace(':', '_'))
  explicit = explicit_settings(config)
  saved_shape = None
  if training_run:
    preflight.check_model_dir(model_dir, create=False)  # created once the chief is known
    # A later command on this model_dir continues with the settings it was trained with.
    saved_shape = preflight.restore_settings(config, pair, model_dir, explicit)
  if pair.name.startswith('custom:') and not pair.is_segmentation:
    shape_given = {'data.image_size', 'data.channels'} & explicit
    shape = saved_shape if saved_shape and not shape_given else custom_image_shape(config)
    pair = pairs.resolve_pair(dataset, FLAGS.source, FLAGS.target, image_shape=shape)
    # Recorded in config.json, so a later flag is compared with the shape actually trained.
    config.data.image_size, config.data.channels = int(shape[0]), int(shape[2])
  # Checked now so a typo fails in a second, not after data preparation; the policy itself is
  # set per stage by `workflow` (export always builds float32 models).
  precision.policy_name(config.train.get('precision', 'fp32'))
  kernels.check_choice(config.train.get('kernels', 'auto'))  # devices are not set up yet
  kernels.check_filter_gradient(config.train.get('filter_gradient', 'auto'))
  workflow.check_config(FLAGS.stage, config)
  tfds.disable_progress_bar()
  keras.utils.set_random_seed(int(config.seed))
  tf.config.experimental.enable_op_determinism()
  # Before anything runs a TF op: logical CPUs and multi-worker need an uninitialised runtime.
  strategy = distribute.create_strategy(FLAGS.strategy, FLAGS.cpu_replicas)
  if training_run and distribute.is_chief(strategy):
    preflight.check_model_dir(model_dir)
  if check_data:
    print(f'[main] checking the data of {pair.source} and {pair.target} (preparing offline '
          'datasets the first time)', flush=True)
    preflight.check_data(config, pair, FLAGS.data_dir, FLAGS.stage, explicit)
  print(f'[main] pair {pair.name}: {pair.source} → {pair.target}, image shape '
        f'{tuple(pair.image_shape)}, model_dir {model_dir}; {distribute.describe(strategy)}; '
        f'kernels {_kernels_line(config, strategy)}', flush=True)
  if config.train.get('precision', 'fp32') == 'bf16':
    warning = precision.bf16_warning(strategy)
    if warning:
      print(f'[main] {warning}', flush=True)
  return common.Context(config=config, pair=pair, model_dir=model_dir,
                        data_dir=FLAGS.data_dir, strategy=strategy,
                        remember_settings=training_run)


def run():
  ctx = build_context()  # validates every flag first, --stage before TensorFlow loads
  from cycada_tf import workflow  # pylint: disable=g-import-not-at-top
  return workflow.run(FLAGS.stage, ctx, eval_stage=FLAGS.eval_stage)


def main(argv):
  cli.run_command(argv, run, example_flag='--stage=source')


if __name__ == '__main__':
  cli.run_main(main)
