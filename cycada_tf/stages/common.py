"""What every stage shares: where it writes, what it needs, how it builds and evaluates models.

One place decides each of these so that stages stay short: the stage directory layout
(`<model_dir>/<stage>/` with `checkpoints/`, TensorBoard events and `metrics.json`), the
prerequisite check that names the stage to run first, variable creation before the first
compiled step, and evaluation of a task network on a domain's test split.

Both task families go through the same functions. A classifier and a segmentation network are
both called as `net(images, training=...)` → (logits, features); a segmentation net's logits
are per-pixel score maps. What differs is decided here once: the input shape (a random crop of
`data.crop_size` for segmentation), the score a stage reports (`ctx.score_name`: accuracy, or
mIoU from the same confusion matrix), and how predictions meet labels (segmentation scores are
resized to the labels' full resolution before the argmax).
"""

import dataclasses
import json
import os

import keras
import numpy as np
import tensorflow as tf

from cycada_tf import distribute
from cycada_tf import losses
from cycada_tf import metrics as metrics_lib
from cycada_tf import models
from cycada_tf import serving
from cycada_tf import summaries
from cycada_tf import trainer
from cycada_tf.data import domains
from cycada_tf.data import pipeline
from cycada_tf.data import translated
from cycada_tf.errors import UserError
from cycada_tf.errors import check_choice

METRICS_FILE = 'metrics.json'
# Where `task` writes G_ST(source), read by `task`, `feature` and the bench.
TRANSLATED_DIR = os.path.join('task', 'translated_source')
# Stages whose output is a target classifier, and the order in which `export` and `eval` prefer
# them when none is named.
CLASSIFIER_STAGES = ('feature', 'task', 'feature_only', 'source', 'target_only')


@dataclasses.dataclass
class Context:
  """The run-wide facts a stage needs: config, dataset pair, directories and strategy."""
  config: object  # ml_collections.ConfigDict
  pair: object  # cycada_tf.data.pairs.Pair
  model_dir: str
  data_dir: object = None
  strategy: object = None
  # Compiled predictors by classifier id (see `_predictor`).
  predictors: dict = dataclasses.field(default_factory=dict, repr=False)
  # Whether training writes `<model_dir>/config.json` (`train.main` sets it; see `fit`).
  remember_settings: bool = False

  def __post_init__(self):
    if self.strategy is None:
      self.strategy = tf.distribute.get_strategy()

  @property
  def is_segmentation(self):
    return self.pair.is_segmentation

  @property
  def image_shape(self):
    """The networks' input: the pair's shape, or for segmentation the training crop."""
    if self.is_segmentation:
      return crop_shape(self.config)
    return tuple(self.pair.image_shape)

  @property
  def score_name(self):
    """What a stage reports per split: `accuracy`, or `miou` for segmentation."""
    return 'miou' if self.is_segmentation else 'accuracy'

  def score_key(self, prefix):
    """The metrics.json key of the score for `prefix`, e.g. 'target_test' → 'target_test_miou'."""
    return f'{prefix}_{self.score_name}'

  @property
  def seed(self):
    return int(self.config.seed)

  @property
  def is_chief(self):
    return distribute.is_chief(self.strategy)

  def stage_dir(self, stage_name):
    return os.path.join(self.model_dir, stage_name)

  def metrics_path(self, stage_name):
    return os.path.join(self.stage_dir(stage_name), METRICS_FILE)

  def is_done(self, stage_name):
    return os.path.exists(self.metrics_path(stage_name))

  def read_metrics(self, stage_name):
    with open(self.metrics_path(stage_name)) as f:
      return json.load(f)

  def command_for(self, stage_name):
    """The command that runs `stage_name` for this pair and model_dir, for error messages."""
    dataset = (f'--dataset={self.pair.name}' if not self.pair.name.startswith('custom:')
               else f'--source={self.pair.source} --target={self.pair.target}')
    return f'python -m train.main --stage={stage_name} {dataset} --model_dir={self.model_dir}'

  def require(self, stage_name, needed_by):
    """Raises a UserError naming the command to run if `stage_name` has not finished."""
    if not self.is_done(stage_name):
      raise UserError(
          f'stage {needed_by!r} needs the finished {stage_name!r} stage, but '
          f'{self.metrics_path(stage_name)} does not exist; run `{self.command_for(stage_name)}` '
          f'first (or --stage=all).')


def epoch_seed(seed, epoch, stream=0):
  """A distinct, reproducible shuffle seed for each (run seed, epoch, input stream)."""
  return int(seed) * 1_000_003 + int(epoch) * 7_919 + int(stream) * 104_729


EPOCH_LENGTHS = ('shorter', 'longer')


def paired_train_size(ctx, source_spec, epoch_length):
  """Examples per epoch of a two-domain stage, by `epoch_length`.

  `shorter`: the smaller train split, as `zip(source_loader, target_loader)` in the release's
  feature stage (each epoch sees a fresh random part of the larger domain). `longer`: the larger
  split, CycleGAN's unaligned-dataset epoch (the release's pixel stage); the smaller repeats.
  """
  check_choice('epoch_length', epoch_length, EPOCH_LENGTHS)
  sizes = [domains.domain_info(spec, ctx.data_dir).num_examples['train']
           for spec in (source_spec, ctx.pair.target)]
  return min(sizes) if epoch_length == 'shorter' else max(sizes)


def crop_shape(config, section=None):
  """A segmentation stage's training input (crop_h, crop_w, 3): the section's `crop_size` if it
  has one (the pixel stage's 400x400), else `data.crop_size`."""
  size = (section.get('crop_size') if section is not None else None) or config.data.crop_size
  return (int(size[0]), int(size[1]), int(config.data.get('channels', 3)))


def resize_width(config, section=None):
  """The width segmentation images are resized to for a stage: the section's `resize_width` if
  it has one (the pixel stage's 1024, docs/method.md §4), else `data.resize_width` (0: full
  size)."""
  if section is not None and section.get('resize_width') is not None:
    return int(section.resize_width)
  return int(config.data.get('resize_width', 0))


def data_options(ctx, section=None):
  """The pipeline settings every stage reads the same way (cache, shuffle buffer, resize);
  `section` is the stage's config section, for its own `resize_width`."""
  data = ctx.config.data
  options = dict(data_dir=ctx.data_dir, cache=data.cache, shuffle_buffer=data.shuffle_buffer)
  if ctx.is_segmentation:
    options.update(resize_width=resize_width(ctx.config, section), flip=bool(data.flip))
  return options


def paired_dataset_fn(ctx, source_spec, batch_size, image_shape=None, section=None):
  """The `dataset_fn(input_context, epoch)` of a two-domain stage: (source, target) batches."""
  examples_memo = {}  # each shard is preprocessed once; later epochs reshuffle the cache
  image_shape = image_shape or ctx.image_shape

  def dataset_fn(input_context, epoch):
    return pipeline.paired_dataset(
        source_spec, ctx.pair.target, 'train', image_shape, batch_size=batch_size,
        seed=epoch_seed(ctx.seed, epoch), input_context=input_context, memo=examples_memo,
        **data_options(ctx, section))

  return dataset_fn


OPTIMIZERS = ('adam', 'sgd')


def optimizer(section, learning_rate=None):
  """The optimizer a config section describes: `optimizer` adam (default; learning_rate,
  beta_1, beta_2) or sgd (learning_rate, momentum, weight_decay: the segmentation release's).

  Keras' `weight_decay` is decoupled (w ← w − lr·wd·w after the step), where PyTorch's SGD adds
  wd·w to the gradient before momentum; docs/deviations.md lists it.
  """
  learning_rate = section.learning_rate if learning_rate is None else learning_rate
  kind = check_choice('optimizer', section.get('optimizer', 'adam'), OPTIMIZERS,
                      problem=' in the config')
  if kind == 'adam':
    return keras.optimizers.Adam(learning_rate=learning_rate, beta_1=section.get('beta_1', 0.9),
                                 beta_2=section.get('beta_2', 0.999))
  return keras.optimizers.SGD(learning_rate=learning_rate,
                              momentum=float(section.get('momentum', 0.0)),
                              weight_decay=float(section.get('weight_decay', 0.0)) or None)


def stage_length(section, steps_per_epoch, max_steps=0):
  """(epochs, max_steps) of a stage: the section's `iterations` (> 0) end it after that many
  steps, as the release counts them, within the run-wide `max_steps` (tests, benches)."""
  epochs = int(section.epochs)
  iterations = int(section.get('iterations', 0) or 0)
  if iterations > 0:
    epochs = -(-iterations // steps_per_epoch)
    max_steps = min(iterations, max_steps) if max_steps else iterations
  return epochs, int(max_steps)


def build_network(network, input_shape):
  """Creates `network`'s variables with a dummy batch, so the first compiled step finds them."""
  network(tf.zeros((1,) + tuple(input_shape)), training=False)
  return network


def new_classifier(ctx):
  """A fresh task network for this pair (LeNet, DTN, DRN-26 or FCN8s, by config), variables
  created."""
  model = ctx.config.model
  options = {}
  if ctx.is_segmentation:
    name = model.classifier
    options = ({'backbone_weights': model.get('backbone_weights', 'imagenet'),
                'spatial_dropout': bool(model.get('fcn_spatial_dropout', False))}
               if name == 'fcn8s' else {'width': float(model.get('width', 1.0))})
    if name == 'fcn8s' and options['backbone_weights'] == 'random' and ctx.is_chief:
      print('[model] fcn8s: VGG16 backbone randomly initialised '
            '(config model.backbone_weights=random)', flush=True)
  return build_network(models.build_classifier(model.classifier, model.num_classes, **options),
                       ctx.image_shape)


def build_optimizer(optimizer, network):
  optimizer.build(network.trainable_variables)
  return optimizer


def load_classifier(ctx, stage_name, needed_by):
  """The classifier a finished stage trained (source, target_only, task or feature)."""
  ctx.require(stage_name, needed_by)
  classifier = new_classifier(ctx)
  trainer.restore_models(ctx.stage_dir(stage_name), {'classifier': classifier},
                         what=f'stage {needed_by!r} loading the {stage_name!r} classifier')
  return classifier


def eval_dataset(ctx, domain_spec, split='test', batch_size=None, memo=None, section=None):
  """A split in order, unshuffled: whole (resized) images, segmentation labels at full size."""
  return pipeline.domain_dataset(
      domain_spec, split, ctx.image_shape,
      batch_size=int(batch_size or ctx.config.eval.batch_size), shuffle=False, repeat=False,
      drop_remainder=False, memo=memo, crops=False, **data_options(ctx, section))


def translate(ctx, generator, images, multiple=4):
  """G(images) for whole images of any size, at the scale the generator was trained at.

  Segmentation: the images are resized to the pixel stage's `resize_width` (if any) and back,
  so G sees objects at the size it learnt them; sides that are not multiples of 4 (the
  generators' two stride-2 levels) are reflect-padded at the bottom and right and the output
  cropped back. Digit images (28, 32 px) go through unchanged.
  """
  height, width = images.shape[1], images.shape[2]
  if not ctx.is_segmentation:
    return generator(images, training=False)
  width_for_g = resize_width(ctx.config, ctx.config.pixel)
  dynamic_height, dynamic_width = tf.shape(images)[1], tf.shape(images)[2]
  resized = images
  if width_for_g:
    size = pipeline.resized_size(dynamic_height, dynamic_width, width_for_g)
    resized = tf.image.resize(images, size, method='bilinear', antialias=True)
  rows, columns = tf.shape(resized)[1], tf.shape(resized)[2]
  pad_rows, pad_columns = (-rows) % multiple, (-columns) % multiple
  padded = tf.pad(resized, [[0, 0], [0, pad_rows], [0, pad_columns], [0, 0]], mode='REFLECT')
  output = generator(padded, training=False)[:, :rows, :columns]
  if width_for_g:
    output = tf.clip_by_value(
        tf.image.resize(output, [dynamic_height, dynamic_width], method='bilinear'), -1.0, 1.0)
  return tf.ensure_shape(output, [None, height, width, None])


def confusion_matrix(ctx, classifier, domain_spec, split='test', memo=None):
  """The confusion matrix of `classifier` on one domain split (whole split, in order).

  `classifier` is anything called as `classifier(images, training=False)` → (logits, ...).
  Segmentation counts every labelled pixel at the label's resolution (255 is skipped).
  `memo` (a dict kept by the caller, see `pipeline.domain_examples`) keeps the preprocessed
  split for the next call, for callers that evaluate repeatedly.
  """
  predict = _predictor(ctx, classifier)
  matrix = metrics_lib.ConfusionMatrix(ctx.config.model.num_classes)
  for images, labels in eval_dataset(ctx, domain_spec, split, memo=memo):
    matrix.update(labels.numpy(), predict(images, tf.shape(labels)[1:3]).numpy())
  return matrix.matrix


def predicted_classes(logits, label_size=None):
  """argmax over classes; score maps are first resized (bilinearly) to the labels' size, as the
  exported segmenter does it (`serving.resize_to`)."""
  if logits.shape.rank == 4 and label_size is not None:
    logits = serving.resize_to(tf.cast(logits, tf.float32), label_size)
  return tf.argmax(logits, axis=-1)


def _predictor(ctx, classifier):
  """One compiled argmax predictor per classifier for the run's lifetime: the feature stage
  evaluates f_T after every epoch, and a new tf.function each time would retrace each time."""
  key = id(classifier)
  if key not in ctx.predictors:
    @tf.function(reduce_retracing=True)
    def predict(images, label_size):
      logits, _ = classifier(images, training=False)
      return predicted_classes(logits, label_size)
    ctx.predictors[key] = (classifier, predict)  # the classifier is kept, so ids stay unique
  return ctx.predictors[key][1]


def score(ctx, matrix):
  """The family's headline number from one confusion matrix: accuracy, or mIoU."""
  if ctx.is_segmentation:
    return float(metrics_lib.mean_iou(matrix))
  return float(metrics_lib.accuracy(matrix))


def score_on(ctx, classifier, domain_spec, split='test', memo=None):
  """`classifier`'s score (`ctx.score_name`) on one domain split."""
  return score(ctx, confusion_matrix(ctx, classifier, domain_spec, split, memo=memo))


def fit(ctx, stage):
  """Trains `stage` into `<model_dir>/<stage.name>/` with the run's strategy and train config.

  Before the first step the chief records the run's settings in `<model_dir>/config.json`
  (`preflight.save_settings`), so that what trained the model_dir is kept beside it and later
  commands start from it. A command that fails before training leaves no settings behind.
  """
  if ctx.remember_settings and ctx.is_chief:
    from cycada_tf import preflight  # pylint: disable=g-import-not-at-top
    preflight.save_settings(ctx.config, ctx.pair, ctx.model_dir)
  return trainer.fit(stage, ctx.stage_dir(stage.name), ctx.strategy,
                     trainer.TrainConfig.from_config(ctx.config.train))


def classifier_step(classifier, optimizer, global_batch_size):
  """The per-replica supervised step: cross-entropy on (images, labels), one optimizer update.

  The accuracy it reports is per example (for segmentation: the fraction of labelled pixels
  right), averaged over the global batch like the loss.
  """

  def replica_step(batch):
    images, labels = batch
    with tf.GradientTape() as tape:
      logits, _ = classifier(images, training=True)
      loss = losses.average(losses.task_loss(labels, logits), global_batch_size)
    variables = classifier.trainable_variables
    optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
    return {'loss': loss,
            'accuracy': tf.reduce_sum(losses.correct_fraction(labels, logits)) /
                        global_batch_size}

  return replica_step


def supervised_stage(ctx, stage_name, domain_spec, classifier, num_train=None):
  """A `trainer.Stage` that trains `classifier` on labelled `domain_spec` train images.

  The step of `source`, `target_only` and `task`. `num_train` (train examples per epoch)
  defaults to the domain's size; `train.bench` passes it to build the step without the data.
  Every `train.monitor_every_epochs` epochs (and after the last) the chief logs the classifier's
  source- and target-test accuracy as monitoring scalars (`test_accuracy_monitor`); 0 logs none
  and lets the trainer's calls run across epoch ends.
  """
  section = ctx.config[stage_name]
  batch_size = int(section.batch_size)
  if num_train is None:
    num_train = domains.domain_info(domain_spec, ctx.data_dir).num_examples['train']
  with ctx.strategy.scope():
    stage_optimizer = build_optimizer(optimizer(section), classifier)

  examples_memo = {}  # each shard is preprocessed once; later epochs reshuffle the cache

  def dataset_fn(input_context, epoch):
    return pipeline.domain_dataset(
        domain_spec, 'train', ctx.image_shape, batch_size=batch_size, shuffle=True,
        seed=epoch_seed(ctx.seed, epoch), drop_remainder=True, input_context=input_context,
        memo=examples_memo, **data_options(ctx, section))

  steps_per_epoch = pipeline.steps_per_epoch(num_train, batch_size)
  epochs, max_steps = stage_length(section, steps_per_epoch, int(ctx.config.max_steps))
  total_steps = min(steps_per_epoch * epochs, max_steps) if max_steps else steps_per_epoch * epochs
  return trainer.Stage(
      name=stage_name,
      models={'classifier': classifier},
      optimizers={'classifier': stage_optimizer},
      replica_step=classifier_step(classifier, stage_optimizer, batch_size),
      dataset_fn=dataset_fn,
      steps_per_epoch=steps_per_epoch,
      epochs=epochs,
      global_batch_size=batch_size,
      # A config from before the setting (no key) trains as it did then: unmonitored.
      on_epoch_end=test_accuracy_monitor(
          ctx, classifier, ctx.config.train.get('monitor_every_epochs', 0),
          last_epoch=(total_steps - 1) // steps_per_epoch),
      epoch_end_every=max(1, int(ctx.config.train.get('monitor_every_epochs', 0))),
      max_steps=max_steps)


def test_metrics(ctx, classifier):
  """The numbers every task-network stage reports on the source and target test splits.

  Classification: `source_test_accuracy`, `target_test_accuracy`. Segmentation, from one
  confusion matrix per split (docs/method.md §4): `source_test_miou`, `target_test_miou`,
  `target_test_fwiou`, `target_test_pixel_accuracy` and `per_class_iou` (target, by class name).
  """
  if ctx.is_chief:
    print(f'[eval] {ctx.score_name} on the {ctx.pair.source} and {ctx.pair.target} test '
          'splits', flush=True)
  if not ctx.is_segmentation:
    return {
        'source_test_accuracy': score_on(ctx, classifier, ctx.pair.source),
        'target_test_accuracy': score_on(ctx, classifier, ctx.pair.target),
    }
  class_names = domains.domain_info(ctx.pair.target, ctx.data_dir).class_names
  target = metrics_lib.segmentation_metrics(
      confusion_matrix(ctx, classifier, ctx.pair.target), class_names, prefix='target_test_')
  return dict(target, source_test_miou=score_on(ctx, classifier, ctx.pair.source))


def latest_classifier_stage(ctx):
  """The most adapted finished stage: feature, else task, else source."""
  for stage_name in ('feature', 'task', 'source'):
    if ctx.is_done(stage_name):
      return stage_name
  raise UserError(f'no finished classifier stage in {ctx.model_dir}; run '
                  f'`{ctx.command_for("source")}` (or --stage=all) first.')


def translated_source_dir(ctx):
  return os.path.join(ctx.model_dir, TRANSLATED_DIR)


def translated_source_spec(ctx):
  """The domain spec of G_ST(source), written by `task` and read by `feature`."""
  return translated.PREFIX + translated_source_dir(ctx)


def new_generator(config, channels):
  """A generator as the config describes it (architecture, width, dropout, init, norm)."""
  model = config.model
  return models.build_generator(model.generator, channels, dropout=model.generator_dropout,
                                filters=model.generator_filters, init=model.gan_init,
                                affine_norm=model.instance_norm_affine)


def load_translator(ctx, needed_by):
  """G_ST from the finished pixel stage (the generator that renders source in target style)."""
  ctx.require('pixel', needed_by)
  g_st = build_network(new_generator(ctx.config, ctx.image_shape[-1]), ctx.image_shape)
  trainer.restore_models(ctx.stage_dir('pixel'), {'g_st': g_st},
                         what=f'stage {needed_by!r} loading G_ST')
  return g_st


def fit_summary(result):
  """The part of metrics.json that describes how training went."""
  return {
      'steps': result.steps,
      'epochs_completed': result.epochs_completed,
      'stop_reason': result.stop_reason,
      'train_seconds': round(result.seconds, 2),
      # After the first (tracing) call; compare with `train.bench` (docs/performance.md).
      'examples_per_second': (round(result.examples_per_second, 1)
                              if result.examples_per_second else None),
      'first_call_seconds': (round(result.first_call_seconds, 2)
                             if result.first_call_seconds is not None else None),
      'final_train_metrics': {k: float(v) for k, v in result.final_metrics.items()},
  }


def write_stage_metrics(ctx, stage_name, payload):
  """Writes `<stage>/metrics.json` on the chief; its existence marks the stage as finished.

  `payload` is a dict or a function returning one. A function (the stages pass one, since their
  payload evaluates the trained model) is called on the chief only: the other workers wait for
  the chief's file and return what it holds, instead of repeating the evaluation for nothing.
  """
  if not ctx.is_chief:
    # Other workers finish the stage only once the chief has: the next stage's prerequisite
    # check (`require`) and `--stage=all`'s skip test read this file on every worker.
    distribute.wait_for(lambda: ctx.is_done(stage_name),
                        f"the chief worker's {ctx.metrics_path(stage_name)}")
    return ctx.read_metrics(stage_name)
  payload = payload() if callable(payload) else payload
  payload = _plain(dict(payload, stage=stage_name, pair=ctx.pair.name, seed=ctx.seed))
  trainer.write_json_atomically(ctx.metrics_path(stage_name), payload)
  shown = ', '.join(f'{k}={v:.4f}' for k, v in sorted(payload.items())
                    if k.endswith(('accuracy', 'miou')) and isinstance(v, float))
  print(f'[{stage_name}] done: {shown} → {ctx.metrics_path(stage_name)}', flush=True)
  return payload


def _plain(value):
  """Converts numpy scalars/arrays inside `value` to JSON-ready Python values."""
  if isinstance(value, dict):
    return {str(k): _plain(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_plain(v) for v in value]
  if isinstance(value, np.ndarray):
    return value.tolist()
  if isinstance(value, np.generic):
    return value.item()
  return value


# Where the test accuracies of a model in training go, and what TensorBoard says about them.
MONITOR_PREFIX = 'monitor/'
MONITOR_DESCRIPTION = (
    'Monitoring only: never used to choose a setting or stop. The test-split accuracy of the '
    'model being trained, to watch training; picking an epoch or a setting by it would tune on '
    'the test labels and overstate the reported accuracy.')


def test_accuracy_monitor(ctx, classifier, every_epochs=1, last_epoch=None):
  """An `on_epoch_end` logging `classifier`'s test accuracies, or None if `every_epochs` < 1.

  After every `every_epochs`-th epoch and after `last_epoch` (0-based: the epoch training ends
  in, so each curve ends at the model metrics.json reports) the chief writes
  `monitor/source_test_accuracy` and `monitor/target_test_accuracy` into the trainer's summary
  writer; the other workers skip it and wait at their next collective step. It never stops
  training (returns None), and evaluating runs `training=False` (no dropout mask is drawn) over
  unshuffled test splits, so the trained weights are the same with or without it. Disabled, it
  is None rather than a no-op, because the trainer's compiled calls run across epoch ends only
  for stages without an `on_epoch_end`.
  """
  every_epochs = int(every_epochs)
  if every_epochs < 1:
    return None
  memo = {}  # each test split is read and preprocessed once, then served from memory

  def on_epoch_end(epoch, epoch_means):
    del epoch_means  # only the test splits are looked at
    if not ctx.is_chief or ((epoch + 1) % every_epochs and epoch != last_epoch):
      return None
    for prefix, spec in (('source_test', ctx.pair.source), ('target_test', ctx.pair.target)):
      tf.summary.scalar(MONITOR_PREFIX + ctx.score_key(prefix),
                        monitored_accuracy(ctx, classifier, spec, memo),
                        description=MONITOR_DESCRIPTION)
    return None

  return on_epoch_end


def monitored_accuracy(ctx, classifier, domain_spec, memo):
  """`score_on(ctx, classifier, domain_spec)`, with the test split kept in `memo`.

  Without a memo, `score_on` reads and preprocesses the split again on every call: 1.0 and
  1.4 s for the UCI and MNIST test splits on a busy 2-core machine, against 0.17 and 0.30 s
  from memory, and a UCI training epoch takes about 0.3 s. With the stage's `memo` (and
  `data.cache`) only the first call reads; the others are the classifier's forward passes.
  """
  return score_on(ctx, classifier, domain_spec, memo=memo)


def config_section(stage_name):
  """The config section that sets up `stage_name` (`feature_only` is set by `feature`)."""
  return 'feature' if stage_name == 'feature_only' else stage_name


def log_hparams(ctx, stage_name, metrics, sections=None, extra_hparams=None):
  """Writes a finished stage's settings and `metrics` to `<model_dir>/<stage_name>/` for
  TensorBoard's HParams dashboard, on the chief, and returns `metrics` unchanged.

  The settings are the seed, the pair, the stage's name and every scalar setting of the
  top level and of the `data`, `model` and `train` sections and `sections` (default: the
  stage's own, see `config_section`), plus `extra_hparams`; the HParams metrics are the numbers
  at the top level of `metrics` (metrics.json), written as scalars at the stage's last step.
  `metrics` is what `write_stage_metrics` returned, so a stage can end with
  `return common.log_hparams(ctx, name, common.write_stage_metrics(...))`.
  """
  if not ctx.is_chief:
    return metrics
  sections = tuple(sections or (config_section(stage_name),))
  hparams = dict(summaries.config_hparams(ctx.config, sections + ('data', 'model', 'train')),
                 stage=stage_name, pair=ctx.pair.name, **(extra_hparams or {}))
  # Every stage declares the whole config as the dashboard's columns: TensorBoard shows the
  # columns of one run's declaration, whichever it finds first, for every run in the logdir.
  columns = set(summaries.config_hparams(ctx.config)) | set(hparams)
  values = {k: v for k, v in metrics.items() if k != 'seed' and isinstance(v, (int, float))
            and not isinstance(v, bool)}
  writer = tf.summary.create_file_writer(ctx.stage_dir(stage_name))
  with writer.as_default():
    summaries.write_hparams(hparams, values, step=int(metrics.get('steps') or 0),
                            hparam_names=columns)
  writer.close()
  return metrics
