r"""The paper's protocol: the full pipeline for N seeds, then mean ± standard error per model.

    python -m train.reproduce --dataset=uci_mnist --seeds=4 [--model_dir=runs/reproduce] \
        [-- --config.source.epochs=5 ...]

Each seed runs in its own process (`train.main --stage=all`, then the feature-only / ADDA stage,
without the task loss some configs add to the feature stage)
into `<model_dir>/<pair>/seed_<k>/`, so an interrupted reproduction resumes where it stopped.
Arguments after `--` are passed to every `train.main` call. Writes `results.json` and
`results.md` (the paper's Table 2 layout) into `<model_dir>/<pair>/`.
"""

import json
import os
import signal
import subprocess
import sys

from absl import flags

from cycada_tf import results as results_lib
from train import cli

FLAGS = flags.FLAGS
flags.DEFINE_string('dataset', 'uci_mnist', 'Dataset pair.')
flags.DEFINE_integer('seeds', 4, 'Number of runs (seeds 0 .. N-1).')
flags.DEFINE_integer('first_seed', 0, 'First seed.')
flags.DEFINE_string('model_dir', 'runs/reproduce', 'Root directory for the runs.')
flags.DEFINE_string('data_dir', None, 'TFDS data directory.')
flags.DEFINE_bool('feature_only', True, 'Also run the feature-only (ADDA) baseline.')


def seed_commands(dataset, seed_dir, seed, extra_args, data_dir=None, feature_only=True):
  """(stage directory that marks it done, command) for one seed: the pipeline, then ADDA."""
  base = [sys.executable, '-m', 'train.main', f'--dataset={dataset}',
          f'--model_dir={seed_dir}', f'--seed={seed}']
  if data_dir:
    base.append(f'--data_dir={data_dir}')
  # `all` skips its own finished stages, so it is always safe to rerun.
  commands = [(None, base + ['--stage=all'] + extra_args)]
  if feature_only:
    # The paper's baseline row is ADDA: adversarial f_T updates only, whatever task loss the
    # pair's pixel+feat stage adds (`feature.task_weight`); a later `--` argument still wins.
    adda = ['--stage=feature', '--config.feature.from_stage=source',
            '--config.feature.task_weight=0']
    commands.append(('feature_only', base + adda + extra_args))
  return commands


def run_child(command):
  """Runs one `train.main` and returns its exit code; a stop aimed at this process reaches it.

  SIGTERM (`kill`, a scheduler's stop) is passed on, so no seed keeps training alone after the
  reproduction was stopped. Ctrl-C reaches the child from the terminal itself (same process
  group): this process only waits for it to save its place and say how to resume, instead of
  killing it mid-message as `subprocess.call` would.
  """
  child = subprocess.Popen(command)

  def forward(signum, unused_frame):
    if child.poll() is None:
      child.send_signal(signum)

  previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, forward),
              signal.SIGINT: signal.signal(signal.SIGINT, signal.SIG_IGN)}
  try:
    return child.wait()
  finally:
    for signum, handler in previous.items():
      signal.signal(signum, handler)


def main(argv):
  extra_args = list(argv[1:])
  root = os.path.join(FLAGS.model_dir, FLAGS.dataset)
  runs = []
  for seed in range(FLAGS.first_seed, FLAGS.first_seed + FLAGS.seeds):
    seed_dir = os.path.join(root, f'seed_{seed}')
    for done_stage, command in seed_commands(FLAGS.dataset, seed_dir, seed, extra_args,
                                             FLAGS.data_dir, FLAGS.feature_only):
      if done_stage and os.path.exists(os.path.join(seed_dir, done_stage, 'metrics.json')):
        continue
      print('[reproduce]', ' '.join(command[1:]), flush=True)
      code = run_child(command)
      if code < 0:  # ended by a signal
        print(f'[reproduce] seed {seed} stopped by signal {-code}; rerun the same command to '
              'resume', file=sys.stderr)
        sys.exit(128 - code)
      if code:
        print(f'[reproduce] seed {seed} failed with exit code {code}', file=sys.stderr)
        sys.exit(code)
    runs.append(results_lib.target_accuracies(seed_dir))

  summary = results_lib.summarise(runs)
  from cycada_tf.data import pairs  # pylint: disable=g-import-not-at-top
  pair = pairs.PAIRS.get(FLAGS.dataset)
  score = 'mIoU' if pair is not None and pair.is_segmentation else 'accuracy'
  table = results_lib.markdown_table(summary, FLAGS.dataset, score)
  command = ' '.join(['python -m train.reproduce'] + sys.argv[1:])
  with open(os.path.join(root, 'results.json'), 'w') as f:
    json.dump({'dataset': FLAGS.dataset, 'seeds': FLAGS.seeds, 'command': command,
               'summary': summary, 'runs': runs}, f, indent=2)
  with open(os.path.join(root, 'results.md'), 'w') as f:
    f.write(f'# {FLAGS.dataset}: target test {score} over {len(runs)} seeds\n\n'
            f'Command: `{command}`\n\n{table}\n')
  print(table)


if __name__ == '__main__':
  cli.run_main(main)
