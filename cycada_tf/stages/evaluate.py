"""Stage `eval`: a finished stage's classifier on the target test set, in detail.

Writes `<model_dir>/eval/<evaluated stage>/metrics.json` (accuracy, per-class accuracy, the
confusion matrix), a confusion-matrix PNG beside it, the same picture as a TensorBoard image, and
the run's settings with the accuracy for TensorBoard's HParams dashboard.
"""

import os

import tensorflow as tf

from cycada_tf import metrics as metrics_lib
from cycada_tf import summaries
from cycada_tf.data import domains
from cycada_tf.errors import UserError
from cycada_tf.stages import common

def run(ctx, eval_stage=None):
  """Evaluates `eval_stage` (default: the latest adapted stage) on the target test split."""
  eval_stage = eval_stage or common.latest_classifier_stage(ctx)
  if eval_stage not in common.CLASSIFIER_STAGES:
    raise UserError(f'--eval_stage={eval_stage!r} has no classifier; valid: '
                    f'{", ".join(common.CLASSIFIER_STAGES)}.')
  out_name = os.path.join('eval', eval_stage)
  out_dir = ctx.stage_dir(out_name)

  def payload():  # on the chief only (see common.write_stage_metrics)
    classifier = common.load_classifier(ctx, eval_stage, needed_by='eval')
    matrix = common.confusion_matrix(ctx, classifier, ctx.pair.target)
    class_names = domains.domain_info(ctx.pair.target, ctx.data_dir).class_names
    picture = summaries.confusion_matrix_image(matrix, class_names)
    summaries.save_png(picture, os.path.join(out_dir, 'confusion_matrix.png'))
    with tf.summary.create_file_writer(out_dir).as_default():
      summaries.write_image(f'confusion_matrix/{eval_stage}', picture, step=0)
    return {
        'evaluated_stage': eval_stage,
        'domain': ctx.pair.target,
        'split': 'test',
        'target_test_accuracy': float(metrics_lib.accuracy(matrix)),
        'per_class_accuracy': dict(zip(class_names, metrics_lib.per_class_accuracy(matrix))),
        'confusion_matrix': matrix,
        'class_names': list(class_names),
    }

  ctx.require(eval_stage, needed_by='eval')  # on every worker, so all fail alike
  metrics = common.write_stage_metrics(ctx, out_name, payload)
  # The evaluated stage's settings too: they, not eval's batch size, decide its accuracy.
  return common.log_hparams(ctx, out_name, metrics,
                            sections=('eval', common.config_section(eval_stage)),
                            extra_hparams={'evaluated_stage': eval_stage})
