"""Stage `eval`: a finished stage's task network on the target test set, in detail.

Writes `<model_dir>/eval/<evaluated stage>/metrics.json` (accuracy, per-class accuracy, the
confusion matrix), a confusion-matrix PNG beside it, the same picture as a TensorBoard image, and
the run's settings with the accuracy for TensorBoard's HParams dashboard.

Segmentation writes, from the same one confusion matrix, mIoU, fwIoU, pixel accuracy and the
per-class IoU (metrics.json, and `per_class_iou.md` in the layout of the paper's Table 4), and a
colourised grid of the first test images (image | ground truth | prediction, at the labels'
resolution) as `predictions.png` and a TensorBoard image.
"""

import os

import tensorflow as tf

import numpy as np

from cycada_tf import metrics as metrics_lib
from cycada_tf import summaries
from cycada_tf.data import domains
from cycada_tf.errors import check_choice
from cycada_tf.stages import common

IOU_TABLE = 'per_class_iou.md'
PREDICTIONS_PNG = 'predictions.png'


def run(ctx, eval_stage=None):
  """Evaluates `eval_stage` (default: the latest adapted stage) on the target test split."""
  eval_stage = eval_stage or common.latest_classifier_stage(ctx)
  check_choice('--eval_stage', eval_stage, common.CLASSIFIER_STAGES, problem=' has no classifier')
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
    if ctx.is_segmentation:
      return _segmentation_payload(ctx, classifier, eval_stage, matrix, class_names, out_dir)
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


def _segmentation_payload(ctx, classifier, eval_stage, matrix, class_names, out_dir):
  """mIoU, fwIoU, pixel accuracy, per-class IoU (+ the Table 4 row) and the prediction grid."""
  values = metrics_lib.segmentation_metrics(matrix, class_names, prefix='target_test_')
  table = summaries.iou_table_markdown(
      [(eval_stage, values['per_class_iou'], values['target_test_miou'],
        values['target_test_fwiou'], values['target_test_pixel_accuracy'])], class_names)
  table_path = os.path.join(out_dir, IOU_TABLE)
  with open(table_path, 'w') as f:
    f.write(f'# {ctx.pair.target} test, model of stage {eval_stage!r}: IoU % per class\n\n'
            f'{table}\n')
  grid = prediction_grid(ctx, classifier, class_names)
  grid_path = os.path.join(out_dir, PREDICTIONS_PNG)
  summaries.save_png(grid, grid_path)
  with tf.summary.create_file_writer(out_dir).as_default():
    summaries.write_image(f'predictions/{eval_stage}', grid, step=0)
  print(f'[eval] per-class IoU of {eval_stage}:\n{table}', flush=True)
  return dict(values, evaluated_stage=eval_stage, domain=ctx.pair.target, split='test',
              confusion_matrix=matrix, class_names=list(class_names),
              per_class_iou_table=table_path, predictions_png=grid_path)


def prediction_grid(ctx, classifier, class_names):
  """Colourised image | ground truth | prediction rows for the first target test images.

  Every picture is at its label's resolution: the image resized to it, the prediction made as
  the metrics make it (`common.predicted_classes`).
  """
  count = int(ctx.config.eval.get('grid_examples', 4))
  images, labels, predictions = [], [], []
  size = None  # the first label's: images of another size are resized to it for the grid
  for image, label in common.eval_dataset(ctx, ctx.pair.target, batch_size=1).take(count):
    logits, _ = classifier(image, training=False)
    label_size = tf.shape(label)[1:3]
    prediction = common.predicted_classes(logits, label_size)[..., None]
    size = label_size if size is None else size
    nearest = lambda x: tf.image.resize(x, size, method='nearest')[0, ..., 0].numpy()
    predictions.append(nearest(prediction))
    labels.append(nearest(label[..., None]))
    images.append(tf.image.resize(image, size)[0].numpy())
  palette = summaries.segmentation_palette(len(class_names), class_names)
  return summaries.segmentation_grid(np.stack(images), np.stack(labels), np.stack(predictions),
                                     palette, max_examples=count)
