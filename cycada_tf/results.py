"""The paper's Table 2 layout: target accuracy of each model, one run or mean ± s.e. over seeds.

Rows come from the stages' metrics.json files, so a table can be rebuilt from any model_dir(s)
without rerunning anything.
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


def target_accuracies(model_dir):
  """{row label: target test accuracy} for every finished stage in one model_dir."""
  found = {}
  for label, stage in ROWS:
    path = os.path.join(model_dir, stage, 'metrics.json')
    if os.path.exists(path):
      with open(path) as f:
        found[label] = float(json.load(f)['target_test_accuracy'])
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


def markdown_table(summary, pair_name=None):
  """A Markdown table of the summary, with the paper's numbers beside it when it has them."""
  paper = PAPER_TABLE.get(pair_name, {})
  header = '| model | target accuracy % (mean ± s.e.) | runs |'
  rule = '|---|---|---|'
  if paper:
    header += ' paper (4 runs) |'
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
    lines.append(line)
  return '\n'.join(lines)
