"""Stages `source` (f_S on labelled source) and `target_only` (the oracle, on target labels).

Both train a task network with softmax cross-entropy on one labelled domain and report its
accuracy on the source and target test sets; they differ only in which domain they learn from.
"""

import tensorflow as tf

from cycada_tf import losses
from cycada_tf import trainer
from cycada_tf.data import pipeline
from cycada_tf.data import domains
from cycada_tf.stages import common


def classifier_step(classifier, optimizer, global_batch_size):
  """The per-replica supervised step: cross-entropy on (images, labels), one Adam update."""

  def replica_step(batch):
    images, labels = batch
    with tf.GradientTape() as tape:
      logits, _ = classifier(images, training=True)
      loss = losses.average(losses.task_loss(labels, logits), global_batch_size)
    variables = classifier.trainable_variables
    optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
    correct = tf.cast(tf.equal(tf.argmax(logits, axis=-1), labels), tf.float32)
    return {'loss': loss, 'accuracy': tf.reduce_sum(correct) / global_batch_size}

  return replica_step


def supervised_stage(ctx, stage_name, domain_spec, classifier, dataset_fn=None, num_train=None):
  """A `trainer.Stage` that trains `classifier` on labelled `domain_spec` train images.

  `num_train` (train examples per epoch) defaults to the domain's size; `train.bench` passes it
  so that it can build the real step without the data being on the machine.
  """
  section = ctx.config[stage_name]
  batch_size = int(section.batch_size)
  if num_train is None:
    num_train = domains.domain_info(domain_spec, ctx.data_dir).num_examples['train']
  with ctx.strategy.scope():
    optimizer = common.build_optimizer(common.adam(section), classifier)

  examples_memo = {}  # each shard is preprocessed once; later epochs reshuffle the cache

  def default_dataset_fn(input_context, epoch):
    return pipeline.domain_dataset(
        domain_spec, 'train', ctx.image_shape, batch_size=batch_size, data_dir=ctx.data_dir,
        shuffle=True, seed=common.epoch_seed(ctx.seed, epoch), drop_remainder=True,
        input_context=input_context, cache=ctx.config.data.cache,
        shuffle_buffer=ctx.config.data.shuffle_buffer, memo=examples_memo)

  return trainer.Stage(
      name=stage_name,
      models={'classifier': classifier},
      optimizers={'classifier': optimizer},
      replica_step=classifier_step(classifier, optimizer, batch_size),
      dataset_fn=dataset_fn or default_dataset_fn,
      steps_per_epoch=pipeline.steps_per_epoch(num_train, batch_size),
      epochs=int(section.epochs),
      global_batch_size=batch_size,
      max_steps=int(ctx.config.max_steps))


def test_accuracies(ctx, classifier):
  """Source-test and target-test accuracy, the numbers every classifier stage reports."""
  return {
      'source_test_accuracy': common.accuracy_on(ctx, classifier, ctx.pair.source),
      'target_test_accuracy': common.accuracy_on(ctx, classifier, ctx.pair.target),
  }


def run(ctx, stage_name='source'):
  """Trains f_S (`source`) or the oracle (`target_only`) and writes its metrics.json."""
  domain_spec = ctx.pair.source if stage_name == 'source' else ctx.pair.target
  with ctx.strategy.scope():
    classifier = common.new_classifier(ctx)
  stage = supervised_stage(ctx, stage_name, domain_spec, classifier)
  result = trainer.fit(stage, ctx.stage_dir(stage_name), ctx.strategy,
                       trainer.TrainConfig.from_config(ctx.config.train))
  return common.write_stage_metrics(ctx, stage_name, lambda: dict(
      test_accuracies(ctx, classifier), trained_on=domain_spec, **common.fit_summary(result)))


def run_target_only(ctx):
  return run(ctx, 'target_only')
