"""Stages `source` (f_S on labelled source) and `target_only` (the oracle, on target labels).

Both train a task network with softmax cross-entropy on one labelled domain and report its
accuracy on the source and target test sets; they differ only in which domain they learn from.
"""

from cycada_tf.stages import common


def build(ctx, fresh=False, num_train=None, stage_name='source'):
  """(the `trainer.Stage`, its models): a new classifier and the supervised step.

  `fresh` changes nothing here (this stage always starts from scratch); `num_train` is the
  bench's examples per epoch, so the step can be built without the data.
  """
  del fresh
  domain_spec = ctx.pair.source if stage_name == 'source' else ctx.pair.target
  with ctx.strategy.scope():
    classifier = common.new_classifier(ctx)
  stage = common.supervised_stage(ctx, stage_name, domain_spec, classifier, num_train)
  return stage, {'classifier': classifier}


def build_target_only(ctx, fresh=False, num_train=None):
  return build(ctx, fresh, num_train, stage_name='target_only')


def run(ctx, stage_name='source'):
  """Trains f_S (`source`) or the oracle (`target_only`), writes its metrics.json and its
  settings and metrics for TensorBoard's HParams dashboard."""
  stage, networks = build(ctx, stage_name=stage_name)
  result = common.fit(ctx, stage)
  metrics = common.write_stage_metrics(ctx, stage_name, lambda: dict(
      common.test_metrics(ctx, networks['classifier']),
      trained_on=ctx.pair.source if stage_name == 'source' else ctx.pair.target,
      **common.fit_summary(result)))
  return common.log_hparams(ctx, stage_name, metrics)


def run_target_only(ctx):
  return run(ctx, 'target_only')
