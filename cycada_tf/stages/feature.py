"""Stage `feature`: ADDA-style adaptation of f_T against D_feat (docs/method.md §1 Eq. 5, §2).

`feature` (pixel+feat) starts f_T from the `task` model and uses translated source G_ST(x_s) as
the source side; `--config.feature.from_stage=source` starts from f_S on untranslated source
(feature only; ADDA with `task_weight=0`) and writes to `<model_dir>/feature_only/`. The source
side is seen through a frozen copy of the starting model (`source_encoder=init`, as the release's
ADDA code does) or through f_S itself (`source_encoder=source`, Eq. 5 read literally).

Gating (paper appendix 6.1): f_T is updated only while D_feat's accuracy, averaged over the last
`gate_window` steps, is above `gate_threshold`; `stop_patience_epochs` epochs in a row with no
f_T update stop the stage (the release: one). The gate is decided in cross-replica context from
the global accuracy, so every replica and every worker takes the same branch. Both sides run in
the same mode (`encoder_mode`), so D_feat can only separate them by what the domains differ in.

`task_weight` adds L_task(f_T, source side, source labels) to each f_T update, the f_T terms of
the paper's full objective (Eq. 6: L_task + L_GAN(f_T, D_feat)); 0 is the release's staged ADDA
step, adversarial loss only. The term shares the adversarial step's gate, so the stop rule still
means "D_feat was never good enough to follow".
"""

import math

import tensorflow as tf

from cycada_tf import losses
from cycada_tf import models
from cycada_tf import trainer
from cycada_tf.data import pipeline
from cycada_tf.data import translated
from cycada_tf.errors import UserError
from cycada_tf.errors import check_choice
from cycada_tf.stages import common

FROM_STAGES = ('task', 'source')
SOURCE_ENCODERS = ('init', 'source')
ENCODER_MODES = ('train', 'inference')
DISCRIMINATOR_INPUTS = ('logits', 'features')


def stage_name_for(config):
  """`feature` for pixel+feat, `feature_only` for ADDA (so both can live in one model_dir)."""
  return 'feature' if config.feature.from_stage == 'task' else 'feature_only'


def task_weight_of(section):
  """`feature.task_weight` (0 when a config predates it), or a UserError if no loss can use it."""
  task_weight = float(section.get('task_weight', 0.0))
  if not math.isfinite(task_weight) or task_weight < 0:
    raise UserError(f'--config.feature.task_weight={task_weight}; it weights a loss, so it must '
                    'be 0 (the release) or more.')
  return task_weight


def check_config(config):
  """Raises a UserError for a feature setting no run can use (called before any stage trains)."""
  section, discriminator_input = config.feature, config.model.feature_discriminator_input
  for key, value, valid in (('from_stage', section.from_stage, FROM_STAGES),
                            ('source_encoder', section.source_encoder, SOURCE_ENCODERS),
                            ('encoder_mode', section.encoder_mode, ENCODER_MODES),
                            ('epoch_length', section.epoch_length, common.EPOCH_LENGTHS)):
    check_choice(f'--config.feature.{key}', value, valid)
  task_weight_of(section)
  check_choice('--config.model.feature_discriminator_input', discriminator_input,
               DISCRIMINATOR_INPUTS)


class GateState(tf.Module):
  """D_feat accuracies of the last `window` steps and the count of f_T updates (checkpointed)."""

  def __init__(self, window):
    super().__init__()
    self.window = max(int(window), 1)
    self.history = tf.Variable(tf.zeros([self.window]), trainable=False, name='history')
    self.seen = tf.Variable(0, dtype=tf.int64, trainable=False, name='seen')
    self.updates = tf.Variable(0, dtype=tf.int64, trainable=False, name='updates')
    # Consecutive epochs, up to the last one finished, in which f_T was never updated.
    self.idle_epochs = tf.Variable(0, dtype=tf.int64, trainable=False, name='idle_epochs')

  def record(self, accuracy):
    """Adds this step's global D accuracy and returns the mean over the window so far."""
    self.history.assign(tf.concat([self.history[1:], [accuracy]], axis=0))
    self.seen.assign_add(1)
    count = tf.minimum(self.seen, self.window)
    return tf.reduce_sum(self.history[self.window - tf.cast(count, tf.int32):]) / \
        tf.cast(count, tf.float32)


def gate_open(window_accuracy, threshold):
  """The paper's rule: update f_T only while D_feat is confidently right (accuracy > 60 %)."""
  return window_accuracy > threshold


def no_update_stop_reason(epoch, epoch_means, idle_epochs=None, patience=1):
  """The stop rule: `patience` epochs in a row in which the gate never opened end adaptation.

  The release stops after one such epoch (`patience=1`). `idle_epochs` (a `GateState`'s
  counter, checkpointed) carries the run of idle epochs across calls and resumes.
  """
  idle = epoch_means.get('updated', 1.0) == 0.0
  if idle_epochs is None:
    count = int(idle)
  else:
    idle_epochs.assign(idle_epochs + 1 if idle else 0)
    count = int(idle_epochs.numpy())
  if idle and count >= max(int(patience), 1):
    span = f'epoch {epoch + 1}' if count == 1 else f'epochs {epoch + 2 - count}–{epoch + 1}'
    return (f'no f_T update in {span}: D_feat accuracy never exceeded the gate threshold, so '
            f'no suitable discriminator was found (paper appendix 6.1)')
  return None


def build_stage(ctx, f_t, source_encoder, discriminator, source_spec, stage_name,
                num_train=None):
  """The feature `trainer.Stage` and its `GateState`.

  `num_train` (examples per epoch, by `feature.epoch_length`) defaults to the domains' sizes;
  `train.bench` passes it to build the real step without the data.
  """
  section = ctx.config.feature
  batch_size = int(section.batch_size)
  use_logits = ctx.config.model.feature_discriminator_input == 'logits'
  strategy = ctx.strategy
  with strategy.scope():
    d_optimizer = common.build_optimizer(
        common.optimizer(section, section.discriminator_learning_rate), discriminator)
    f_optimizer = common.build_optimizer(common.optimizer(section), f_t)
    gate = GateState(section.gate_window)

  # Both sides in one mode, or D_feat could tell them apart by dropout noise alone (and the
  # gate would open for that reason): `train`, the release's `net.train()`, runs dropout (and
  # batch statistics) in the source encoder and f_T alike; `inference` in neither.
  training = section.encoder_mode == 'train'
  # f_T's adversarial loss relative to D_feat's: 1 for digits, 0.1 for segmentation
  # (docs/method.md §4).
  adversarial_weight = float(section.get('adversarial_weight', 1.0))
  # Eq. 6's L_task(f_T, G_ST(X_S), Y_S) beside the adversarial loss; 0 (the release) skips it.
  # In `train` mode the source batch also moves f_T's batch-norm statistics (DTN, DRN-26).
  task_weight = task_weight_of(section)

  def represent(network, images):
    logits, features = network(images, training=training)
    return logits if use_logits else features

  def discriminator_step(batch):
    (xs, _), (xt, _) = batch
    source_repr = tf.stop_gradient(represent(source_encoder, xs))
    target_repr = tf.stop_gradient(represent(f_t, xt))
    with tf.GradientTape() as tape:
      d_source = discriminator(source_repr, training=True)
      d_target = discriminator(target_repr, training=True)
      d_loss = losses.average(losses.feature_discriminator_loss(d_source, d_target), batch_size)
    variables = discriminator.trainable_variables
    d_optimizer.apply_gradients(zip(tape.gradient(d_loss, variables), variables))
    correct = losses.discriminator_accuracy(d_source, d_target)
    return {'loss/discriminator': d_loss,
            'discriminator_accuracy': tf.reduce_sum(correct) / (2.0 * batch_size)}

  def target_step(batch):
    (xs, ys), (xt, _) = batch
    with tf.GradientTape() as tape:
      d_target = discriminator(represent(f_t, xt), training=True)
      adversarial = adversarial_weight * losses.average(
          losses.feature_generator_loss(d_target), batch_size)
      terms = (adversarial,)
      if task_weight:
        source_logits, _ = f_t(xs, training=training)
        terms += (task_weight * losses.average(losses.task_loss(ys, source_logits), batch_size),)
      loss = tf.add_n(terms)
    variables = f_t.trainable_variables
    f_optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
    return terms  # the task term only when there is one: nothing to all-reduce otherwise

  def summed(per_replica):
    return tf.nest.map_structure(
        lambda v: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None), per_replica)

  def cross_replica_step(batch):
    outputs = summed(strategy.run(discriminator_step, args=(batch,)))
    window_accuracy = gate.record(outputs['discriminator_accuracy'])

    # (updated, the adversarial loss[, the task loss]), zeros when the gate is shut.
    def update():
      gate.updates.assign_add(1)
      return (tf.constant(1.0),) + tuple(summed(strategy.run(target_step, args=(batch,))))

    def skip():
      return (tf.constant(0.0),) * (3 if task_weight else 2)

    updated, adversarial, *task = tf.cond(gate_open(window_accuracy, section.gate_threshold),
                                          update, skip)
    outputs.update({'loss/target_adversarial': adversarial, 'updated': updated,
                    'gated_off': 1.0 - updated, 'gate_window_accuracy': window_accuracy})
    if task:
      outputs['loss/target_task'] = task[0]
    return outputs

  if num_train is None:
    num_train = common.paired_train_size(ctx, source_spec, section.epoch_length)
  steps_per_epoch = pipeline.steps_per_epoch(num_train, batch_size)
  epochs, max_steps = common.stage_length(section, steps_per_epoch, int(ctx.config.max_steps))

  dataset_fn = common.paired_dataset_fn(ctx, source_spec, batch_size)

  # Monitoring only, after every epoch: target labels never drive training, the stop rule or
  # model selection. The test splits are kept in memory across epochs.
  monitor = common.test_accuracy_monitor(ctx, f_t)

  def on_epoch_end(epoch, epoch_means):
    monitor(epoch, epoch_means)
    return no_update_stop_reason(epoch, epoch_means, gate.idle_epochs,
                                 section.stop_patience_epochs)

  return trainer.Stage(
      name=stage_name,
      # The source encoder is saved too: in `train` mode its batch-norm statistics move.
      models={'classifier': f_t, 'discriminator': discriminator,
              'source_encoder': source_encoder},
      optimizers={'classifier': f_optimizer, 'discriminator': d_optimizer},
      replica_step=None, cross_replica_step=cross_replica_step,
      dataset_fn=dataset_fn, steps_per_epoch=steps_per_epoch, epochs=epochs,
      global_batch_size=batch_size, extra_state={'gate': gate},
      on_epoch_end=on_epoch_end, max_steps=max_steps), gate


def build(ctx, fresh=False, num_train=None):
  """(the `trainer.Stage`, its models): f_T, the source encoder, D_feat, and the gate state.

  f_T and the source encoder come from the finished `from_stage` (and `source` with
  `source_encoder=source`); `fresh` (the bench) starts new networks instead, with `num_train`
  examples per epoch, reading G_ST(source) if `task` wrote it, else the source domain.
  """
  section = ctx.config.feature
  check_config(ctx.config)
  stage_name = stage_name_for(ctx.config)
  from_stage = section.from_stage
  encoder_stage = from_stage if section.source_encoder == 'init' else 'source'
  source_spec = ctx.pair.source
  if from_stage == 'task' and (not fresh or translated.is_complete(
      common.translated_source_dir(ctx))):
    source_spec = common.translated_source_spec(ctx)
  with ctx.strategy.scope():
    if fresh:
      f_t, source_encoder = common.new_classifier(ctx), common.new_classifier(ctx)
    else:
      f_t = common.load_classifier(ctx, from_stage, needed_by=stage_name)
      # Never optimised (its outputs are behind stop_gradient), but left trainable: Keras runs a
      # frozen batch norm in inference mode whatever `training` says, unlike f_T's.
      source_encoder = common.load_classifier(ctx, encoder_stage, needed_by=stage_name)
    discriminator = new_discriminator(ctx, f_t)
  stage, gate = build_stage(ctx, f_t, source_encoder, discriminator, source_spec, stage_name,
                            num_train=num_train)
  return stage, {'classifier': f_t, 'source_encoder': source_encoder,
                 'discriminator': discriminator, 'gate': gate, 'source_side': source_spec}


def new_discriminator(ctx, f_t):
  """D_feat for f_T's outputs, variables created: the release's 500 → 500 → 2 dense net on a
  classifier's logits (or features), or for segmentation 1x1 convs on the score maps."""
  use_logits = ctx.config.model.feature_discriminator_input == 'logits'
  if ctx.is_segmentation:
    logits, features = f_t(tf.zeros((1,) + ctx.image_shape), training=False)
    shape = tuple((logits if use_logits else features).shape[1:])
    return common.build_network(models.build_score_map_discriminator(), shape)
  width = (ctx.config.model.num_classes if use_logits
           else int(f_t(tf.zeros((1,) + ctx.image_shape))[1].shape[-1]))
  return common.build_network(models.build_feature_discriminator(), (width,))


def run(ctx):
  """Adapts f_T's representation to the target domain and writes metrics.json.

  Beside the test scores, f_T's score on the source side's test split (G_ST(source) for
  pixel+feat, as `task` reports it): a signal without target labels of how much of the labelled
  task adaptation kept.
  """
  stage, networks = build(ctx)
  result = common.fit(ctx, stage)
  from_stage = ctx.config.feature.from_stage
  classifier, source_side = networks['classifier'], networks['source_side']

  def payload():
    metrics = dict(common.test_metrics(ctx, classifier), **common.fit_summary(result),
                   initialised_from=from_stage, source_side=source_side,
                   **{ctx.score_key('initial_target_test'):
                      ctx.read_metrics(from_stage)[ctx.score_key('target_test')]},
                   f_t_updates=int(networks['gate'].updates.numpy()))
    if source_side != ctx.pair.source:
      metrics[ctx.score_key('translated_source_test')] = common.score_on(ctx, classifier,
                                                                         source_side)
    return metrics

  metrics = common.write_stage_metrics(ctx, stage.name, payload)
  return common.log_hparams(ctx, stage.name, metrics)
