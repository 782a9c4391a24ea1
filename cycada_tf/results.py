"""The paper's Table 2 layout: target score of each model, one run or mean ± s.e. over seeds.

The score is the target test accuracy for digits and the target test mIoU for segmentation
(whichever the stage's metrics.json has). Rows come from the stages' metrics.json files, so a
table can be rebuilt from any model_dir(s) without rerunning anything.
"""

import json
import os

from cycada_tf import metrics

# (row label, stage directory) in the paper's order.
ROWS = (
    ('source only', 'source'),
    ('feature only (ADDA)', 'feature_only'),
    ('pixel only', 'task'),
    ('pixel+feat', 'feature'),
    ('target only', 'target_only'),
)

# docs/method.md §5 (paper Table 2), accuracy % (mean ± s.e., 4 runs).
PAPER_TABLE = {
    'mnist_usps': {'source only': (82.2, 0.8), 'feature only (ADDA)': (89.4, 0.2),
                   'pixel only': (95.6, 0.2), 'pixel+feat': (95.6, 0.2),
                   'target only': (96.3, 0.1)},
    'usps_mnist': {'source only': (69.6, 3.8), 'feature only (ADDA)': (90.1, 0.8),
                   'pixel only': (96.4, 0.1), 'pixel+feat': (96.5, 0.1),
                   'target only': (99.2, 0.1)},
    'svhn_mnist': {'source only': (67.1, 0.6), 'feature only (ADDA)': (76.0, 1.8),
                   'pixel only': (70.3, 0.2), 'pixel+feat': (90.4, 0.4),
                   'target only': (99.2, 0.1)},
}
# docs/method.md §5 (paper Tables 4 and 3), mIoU %, one number each (no s.e. published); GTA5 →
# Cityscapes with DRN-26, the default network of `configs/gta5_cityscapes.py`.
PAPER_SEGMENTATION_TABLE = {
    'gta5_cityscapes': {'source only': 21.7, 'pixel+feat': 39.5, 'target only': 67.4},
    'synthia_fall_winter': {'source only': 49.8, 'pixel only': 63.3, 'target only': 70.5},
}
# The metrics.json keys a row's score is read from, in order of preference.
SCORE_KEYS = ('target_test_accuracy', 'target_test_miou')


def target_accuracies(model_dir):
  """{row label: target test score} for every finished stage in one model_dir: the accuracy,
  or for segmentation the mIoU (see `SCORE_KEYS`)."""
  found = {}
  for label, stage in ROWS:
    path = os.path.join(model_dir, stage, 'metrics.json')
    if os.path.exists(path):
      with open(path) as f:
        metrics_json = json.load(f)
      key = next((k for k in SCORE_KEYS if k in metrics_json), None)
      if key is not None:
        found[label] = float(metrics_json[key])
  return found


def summarise(runs):
  """runs: list of {label: accuracy} (one per seed) → {label: {mean, se, runs, values}} in %."""
  summary = {}
  for label, _ in ROWS:
    values = [100.0 * run[label] for run in runs if label in run]
    if values:
      mean, se = metrics.mean_and_standard_error(values)
      summary[label] = {'mean': mean, 'standard_error': se, 'runs': len(values),
                        'values': values}
  return summary


def markdown_table(summary, pair_name=None, score='accuracy'):
  """A Markdown table of the summary, with the paper's numbers beside it when it has them.

  `score` names the column: 'accuracy' (digits) or 'mIoU' (segmentation).
  """
  paper = PAPER_TABLE.get(pair_name, {})
  paper_segmentation = PAPER_SEGMENTATION_TABLE.get(pair_name, {})
  header = f'| model | target {score} % (mean ± s.e.) | runs |'
  rule = '|---|---|---|'
  if paper or paper_segmentation:
    header += ' paper (4 runs) |' if paper else ' paper (not reproduced here) |'
    rule += '---|'
  lines = [header, rule]
  for label, _ in ROWS:
    if label not in summary:
      continue
    row = summary[label]
    line = f'| {label} | {row["mean"]:.1f} ± {row["standard_error"]:.1f} | {row["runs"]} |'
    if paper:
      mean, se = paper[label]
      line += f' {mean:.1f} ± {se:.1f} |'
    elif paper_segmentation:
      value = paper_segmentation.get(label)
      line += f' {value:.1f} |' if value is not None else ' – |'
    lines.append(line)
  return '\n'.join(lines)
