"""Stage `pixel`: cycle-consistent image translation with semantic consistency (paper Eq. 1–4).

Trains G_ST (source → target style), G_TS, and the image discriminators D_T and D_S with
least-squares GAN losses, the L1 cycle loss, an optional identity loss, and the semantic
consistency loss through a classifier: the frozen source classifier f_S from the `source` stage
(the paper's Eq. 4, `pixel.semantic_classifier=source`), or the release's small classifier
trained online on real source images, whose semantic terms count only once its last loss was at
most `pixel.semantic_gate_loss` (`=online`). Each term has
its own weight in `config.pixel`, so the paper's ablations are one override each
(`--config.pixel.semantic_weight=0`, `--config.pixel.cycle_weight=0`). The losses are summarised
in docs/method.md §1, the stage in §2, and the paper's and the release's settings in §3.
"""

import os

import keras
import numpy as np
import tensorflow as tf

from cycada_tf import image_pool
from cycada_tf import losses
from cycada_tf import models
from cycada_tf import summaries
from cycada_tf import trainer
from cycada_tf.data import pipeline
from cycada_tf.errors import UserError
from cycada_tf.errors import check_choice
from cycada_tf.stages import common

SEMANTIC_LABELS = ('predicted', 'true')
SEMANTIC_CLASSIFIERS = ('source', 'online')
TRANSLATION_PNG = 'translations.png'


class LinearDecay(keras.optimizers.schedules.LearningRateSchedule):
  """Constant learning rate, then linear decay to zero over the last `decay_steps` (CycleGAN)."""

  def __init__(self, learning_rate, total_steps, decay_steps):
    self.learning_rate = float(learning_rate)
    self.total_steps = int(total_steps)
    self.decay_steps = int(decay_steps)

  def __call__(self, step):
    if self.decay_steps <= 0:
      return tf.constant(self.learning_rate, tf.float32)
    step = tf.cast(step, tf.float32)
    remaining = tf.cast(self.total_steps, tf.float32) - step
    fraction = tf.clip_by_value(remaining / float(self.decay_steps), 0.0, 1.0)
    return self.learning_rate * fraction

  def get_config(self):
    return dict(learning_rate=self.learning_rate, total_steps=self.total_steps,
                decay_steps=self.decay_steps)


def new_image_discriminator(config):
  model = config.model
  return models.build_image_discriminator(
      model.image_discriminator, filters=model.discriminator_filters,
      padding=model.discriminator_padding, init=model.gan_init,
      affine_norm=model.instance_norm_affine)


class Translators:
  """The four pixel-stage networks, built for one pair; also what `task` and `export` load."""

  NAMES = ('g_st', 'g_ts', 'd_t', 'd_s')

  def __init__(self, config, image_shape):
    self.g_st = common.new_generator(config, image_shape[-1])
    self.g_ts = common.new_generator(config, image_shape[-1])
    self.d_t = new_image_discriminator(config)
    self.d_s = new_image_discriminator(config)
    for network in self.as_dict().values():
      common.build_network(network, image_shape)

  def as_dict(self):
    return {name: getattr(self, name) for name in self.NAMES}


def generator_losses(nets, classifier, section, xs, ys, xt, semantic_gate=None):
  """Per-example generator-side loss terms (GAN, cycle, identity, semantic) and the fakes.

  `classifier` gives the semantic term's logits: f_S, frozen and in inference mode, or the online
  classifier, in training mode as the release runs it; `semantic_gate` (0 or 1) multiplies the
  semantic term (the online classifier's warm-up rule), None keeps it.
  """
  fake_t = nets.g_st(xs, training=True)  # source rendered as target
  fake_s = nets.g_ts(xt, training=True)  # target rendered as source
  terms = {
      'gan_st': losses.lsgan_generator_loss(nets.d_t(fake_t, training=True)),
      'gan_ts': losses.lsgan_generator_loss(nets.d_s(fake_s, training=True)),
      'cycle': (losses.cycle_loss(xs, nets.g_ts(fake_t, training=True)) +
                losses.cycle_loss(xt, nets.g_st(fake_s, training=True))),
  }
  if section.identity_weight:
    terms['identity'] = (losses.identity_loss(xt, nets.g_st(xt, training=True)) +
                         losses.identity_loss(xs, nets.g_ts(xs, training=True)))
  if section.semantic_weight:
    # Eq. 4: the classifier's own predictions on the untranslated images are the labels.
    online = section.semantic_classifier == 'online'

    def logits(images):
      return classifier(images, training=online)[0]

    source_labels = (ys if section.semantic_labels == 'true'
                     else losses.predicted_labels(logits(xs)))
    target_labels = losses.predicted_labels(logits(xt))
    terms['semantic'] = (losses.semantic_loss(logits(fake_t), source_labels) +
                         losses.semantic_loss(logits(fake_s), target_labels))
    if semantic_gate is not None:
      terms['semantic'] = terms['semantic'] * semantic_gate
  return terms, fake_t, fake_s


def _weights(section):
  return {'gan_st': section.gan_weight_st, 'gan_ts': section.gan_weight_ts,
          'cycle': section.cycle_weight, 'identity': section.identity_weight,
          'semantic': section.semantic_weight}


class OnlineClassifier:
  """The release's semantic-loss classifier, its optimizer and the loss of its last update.

  The release zeroes both semantic terms while that loss is above 1.0 (and before the first
  update): `last_loss` starts at +inf and is checkpointed, so a resumed run gates as the
  uninterrupted one. It is the global batch's mean (replicas average it), as on one device.
  """

  def __init__(self, ctx, image_shape, global_batch_size):
    config = ctx.config
    self.network = models.OnlineSemanticClassifier(
        num_classes=config.model.num_classes, filters=config.model.discriminator_filters,
        name='semantic_classifier')
    common.build_network(self.network, image_shape)
    section = config.pixel
    # Adam with the pixel section's betas, at the classifier's own learning rate.
    self.optimizer = common.build_optimizer(
        common.optimizer(section, float(section.semantic_classifier_learning_rate)),
        self.network)
    # The supervised step every classifier stage uses, on real source (the release's
    # `backward_CLS`).
    self._train_step = common.classifier_step(self.network, self.optimizer, global_batch_size)
    self.last_loss = tf.Variable(float('inf'), trainable=False, name='semantic_classifier_loss',
                                 aggregation=tf.VariableAggregation.MEAN)
    self.gate_loss = float(section.semantic_gate_loss)

  def gate(self):
    return tf.cast(self.last_loss <= self.gate_loss, tf.float32)

  def update(self, xs, ys):
    """One step on real source images; returns this replica's share of the loss."""
    loss = self._train_step((xs, ys))['loss']
    # The replica's share of the global mean; MEAN aggregation of the per-replica values would
    # divide it again, so each replica writes its share scaled by the replica count.
    replicas = tf.distribute.get_replica_context().num_replicas_in_sync
    self.last_loss.assign(loss * replicas)
    return loss


def pixel_step(nets, classifier, optimizers, pools, section, global_batch_size, online=None):
  """The per-replica step: one generator update (both G), then one update of each D, then (with
  the release's online classifier, `online`) one update of that classifier."""
  weights = _weights(section)
  generators = [nets.g_st, nets.g_ts]
  if online is not None:
    classifier = online.network

  def replica_step(batch):
    (xs, ys), (xt, _) = batch
    gate = online.gate() if online is not None else None
    with tf.GradientTape() as tape:
      terms, fake_t, fake_s = generator_losses(nets, classifier, section, xs, ys, xt,
                                               semantic_gate=gate)
      per_example = tf.add_n([weights[k] * v for k, v in terms.items()])
      generator_loss = losses.average(per_example, global_batch_size)
    g_variables = [g.trainable_variables for g in generators]
    grads = tape.gradient(generator_loss, g_variables)
    for name, g_grads, variables in zip(('g_st', 'g_ts'), grads, g_variables):
      optimizers[name].apply_gradients(zip(g_grads, variables))

    outputs = {f'loss/{k}': losses.average(v, global_batch_size) for k, v in terms.items()}
    outputs['loss/generator_total'] = generator_loss
    for name, real, fake in (('d_t', xt, fake_t), ('d_s', xs, fake_s)):
      discriminator = getattr(nets, name)
      fake = pools[name].query(fake)
      with tf.GradientTape() as tape:
        d_loss = losses.average(losses.lsgan_discriminator_loss(
            discriminator(real, training=True), discriminator(fake, training=True)),
                                global_batch_size)
      variables = discriminator.trainable_variables
      optimizers[name].apply_gradients(zip(tape.gradient(d_loss, variables), variables))
      outputs[f'loss/{name}'] = d_loss
    if online is not None:
      outputs['loss/semantic_classifier'] = online.update(xs, ys)
      # The gate as the next step will see it: 1 once the classifier's loss is low enough.
      outputs['semantic_gate_open'] = online.gate() / tf.cast(
          tf.distribute.get_replica_context().num_replicas_in_sync, tf.float32)
    return outputs

  return replica_step


class _SampleImages:
  """Fixed test images of both domains, translated for TensorBoard and the final PNG (Fig. 3).

  Segmentation: the first `count` test images, each centre-cropped to the stage's crop size
  (whole images of a real pair are too large for a readable grid).
  """

  def __init__(self, ctx, nets, count=8):
    self.nets = nets
    shape = stage_image_shape(ctx)

    def first(spec):
      if not ctx.is_segmentation:
        dataset = pipeline.domain_dataset(spec, 'test', shape, batch_size=count,
                                          data_dir=ctx.data_dir, shuffle=False)
        images, _ = next(iter(dataset))
        return images
      images = [tf.image.resize_with_crop_or_pad(image[0], shape[0], shape[1])
                for image, _ in common.eval_dataset(ctx, spec, batch_size=1,
                                                    section=ctx.config.pixel).take(count)]
      return tf.stack(images)

    self.source, self.target = first(ctx.pair.source), first(ctx.pair.target)

  def grid(self):
    nets = self.nets
    fake_t = nets.g_st(self.source, training=False)
    fake_s = nets.g_ts(self.target, training=False)
    blocks = [summaries.translation_grid(self.source.numpy(), fake_t.numpy(),
                                         nets.g_ts(fake_t, training=False).numpy()),
              summaries.translation_grid(self.target.numpy(), fake_s.numpy(),
                                         nets.g_st(fake_s, training=False).numpy())]
    # Source block (x_s | G_ST(x_s) | G_TS(G_ST(x_s))) left, target block right, 8 px apart.
    height = max(b.shape[0] for b in blocks)
    blocks = [np.pad(b, ((0, height - b.shape[0]), (0, 0), (0, 0)), constant_values=255)
              for b in blocks]
    gap = np.full((height, 8, 3), 255, np.uint8)
    return np.concatenate([blocks[0], gap, blocks[1]], axis=1)


def translated_accuracies(ctx, nets, classifier):
  """f_S on translated test images: a sanity signal, never used for training or selection.

  `fs_translated_target_accuracy`: f_S(G_TS(x_t)) against target labels (should beat f_S(x_t)).
  `fs_translated_source_accuracy`: f_S(G_ST(x_s)) against source labels (semantics kept).
  """
  def through(generator):
    return lambda images, training: classifier(common.translate(ctx, generator, images),
                                               training=training)

  return {
      ctx.score_key('fs_translated_target'): common.score_on(ctx, through(nets.g_ts),
                                                             ctx.pair.target),
      ctx.score_key('fs_translated_source'): common.score_on(ctx, through(nets.g_st),
                                                             ctx.pair.source),
  }


def stage_image_shape(ctx):
  """The translators' training input: the pair's shape, or segmentation's `pixel.crop_size`."""
  if ctx.is_segmentation:
    return common.crop_shape(ctx.config, ctx.config.pixel)
  return ctx.image_shape


def check_config(config):
  """Raises a UserError for a pixel setting no run can use (called before any stage trains)."""
  section = config.pixel
  check_choice('--config.pixel.semantic_labels', section.semantic_labels, SEMANTIC_LABELS)
  check_choice('--config.pixel.epoch_length', section.epoch_length, common.EPOCH_LENGTHS)
  check_choice('--config.pixel.semantic_classifier', section.semantic_classifier,
               SEMANTIC_CLASSIFIERS)
  if section.semantic_classifier == 'online':
    if config.model.classifier in models.SEGMENTATION_CLASSIFIERS:
      raise UserError('--config.pixel.semantic_classifier=online: the release\'s online '
                      'classifier is for digit pairs; segmentation uses f_S (=source)')
    check_online_image_size(config.data.image_size)


def check_online_image_size(size):
  """The online classifier's four valid stride-2 convolutions need `MIN_SIZE` pixels a side."""
  minimum = models.OnlineSemanticClassifier.MIN_SIZE
  if size is not None and int(size) < minimum:
    raise UserError(f'--config.pixel.semantic_classifier=online needs images of at least '
                    f'{minimum}×{minimum} (the release\'s classifier was written for 32×32); '
                    f'these are {size}×{size}: use =source (f_S), or a custom pair resized '
                    f'(--source=... --target=... --config.data.image_size=32)')


def build_stage(ctx, classifier, num_train=None, with_samples=True):
  """The pixel `trainer.Stage`; `classifier` is the frozen f_S (with
  `pixel.semantic_classifier=online`, only for the sanity metrics).

  `num_train` (examples per epoch, by `pixel.epoch_length`) defaults to the domains' sizes and
  `with_samples=False` skips the test images for summaries: `train.bench` sets both to build the
  real step offline. Returns (stage, nets, samples or None).
  """
  check_config(ctx.config)
  section = ctx.config.pixel
  batch_size = int(section.batch_size)
  if num_train is None:
    num_train = common.paired_train_size(ctx, ctx.pair.source, section.epoch_length)
  steps_per_epoch = pipeline.steps_per_epoch(num_train, batch_size)
  total_steps = steps_per_epoch * int(section.epochs)
  schedule = LinearDecay(section.learning_rate, total_steps,
                         steps_per_epoch * int(section.decay_epochs))
  image_shape = stage_image_shape(ctx)
  online_classifier = section.semantic_classifier == 'online'
  if online_classifier:
    check_online_image_size(min(image_shape[:2]))
  with ctx.strategy.scope():
    nets = Translators(ctx.config, image_shape)
    optimizers = {name: common.build_optimizer(common.optimizer(section, schedule),
                                               getattr(nets, name))
                  for name in Translators.NAMES}
    pools = {name: image_pool.ImagePool(section.pool_size, image_shape, seed=ctx.seed + i)
             for i, name in enumerate(('d_t', 'd_s'))}
    online = (OnlineClassifier(ctx, image_shape, batch_size) if online_classifier
              else None)
  classifier.trainable = False
  stage_models, stage_optimizers = nets.as_dict(), dict(optimizers)
  extra_state = {'pool_d_t': pools['d_t'], 'pool_d_s': pools['d_s']}
  if online is not None:
    stage_models['semantic_classifier'] = online.network
    stage_optimizers['semantic_classifier'] = online.optimizer
    extra_state['semantic_classifier_loss'] = online.last_loss

  dataset_fn = common.paired_dataset_fn(ctx, ctx.pair.source, batch_size, image_shape,
                                        section=section)

  samples = _SampleImages(ctx, nets) if ctx.is_chief and with_samples else None
  every = max(int(section.image_every_steps), 1)
  max_steps = int(ctx.config.max_steps)
  last_step = min(total_steps, max_steps) if max_steps > 0 else total_steps
  written = []  # steps with a grid, in this process

  def on_log(step):
    # Called at every log step and at the last. Only every `image_every_steps` would leave a
    # short run (a smoke test, a first try of a pair) with no image, so the first log step (a
    # resumed run's first) and the final step always get one too.
    if not written or step % every < ctx.config.train.log_every_steps or step >= last_step:
      summaries.write_image('translations', samples.grid(), step)
      written.append(step)

  stage = trainer.Stage(
      name='pixel', models=stage_models, optimizers=stage_optimizers,
      replica_step=pixel_step(nets, classifier, optimizers, pools, section, batch_size,
                              online=online),
      dataset_fn=dataset_fn, steps_per_epoch=steps_per_epoch, epochs=int(section.epochs),
      global_batch_size=batch_size, extra_state=extra_state,
      on_log=on_log if samples else None, max_steps=max_steps)
  return stage, nets, samples


def build(ctx, fresh=False, num_train=None):
  """(the `trainer.Stage`, its models): G_ST, G_TS, D_T, D_S (`translators`) and f_S.

  f_S is the finished source stage's, frozen; `fresh` (the bench) builds a new one instead and
  skips the summary images, with `num_train` examples per epoch, so no data or stage is needed.
  """
  with ctx.strategy.scope():
    classifier = (common.new_classifier(ctx) if fresh
                  else common.load_classifier(ctx, 'source', needed_by='pixel'))
  stage, nets, _ = build_stage(ctx, classifier, num_train=num_train, with_samples=not fresh)
  return stage, {'translators': nets, 'classifier': classifier}


def run(ctx):
  """Trains the translators (semantic term through f_S or the online classifier) and writes
  metrics.json and the PNG grid."""
  stage, networks = build(ctx)
  result = common.fit(ctx, stage)
  nets, classifier = networks['translators'], networks['classifier']

  def payload():  # on the chief only (see common.write_stage_metrics)
    values = dict(common.fit_summary(result), **translated_accuracies(ctx, nets, classifier))
    values[ctx.score_key('fs_target')] = common.score_on(ctx, classifier, ctx.pair.target)
    png = os.path.join(ctx.stage_dir('pixel'), TRANSLATION_PNG)
    summaries.save_png(_SampleImages(ctx, nets).grid(), png)
    values['translations_png'] = png
    return values

  return common.log_hparams(ctx, 'pixel', common.write_stage_metrics(ctx, 'pixel', payload))
