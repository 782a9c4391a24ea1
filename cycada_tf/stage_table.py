"""The stages by name: pure data, so the command line can refuse a mistyped `--stage` before
TensorFlow and Keras load (importing them takes seconds)."""

from cycada_tf.errors import check_choice

# stage name → (module under cycada_tf.stages, its `run`, its `build` if it trains). `workflow`
# imports the modules lazily so that a stage that is not run costs nothing at start-up. A
# trainable stage's `build(ctx, fresh=False, num_train=None) -> (trainer.Stage, models)` is what
# both its `run` and `train.bench` call; adding a stage means a module, a line here and a config
# section.
STAGE_MODULES = {
    'source': ('source', 'run', 'build'),
    'target_only': ('source', 'run_target_only', 'build_target_only'),
    'pixel': ('pixel', 'run', 'build'),
    'task': ('task', 'run', 'build'),
    'feature': ('feature', 'run', 'build'),
    'eval': ('evaluate', 'run', None),
    'export': ('export', 'run', None),
}
STAGES = tuple(STAGE_MODULES) + ('all',)
TRAINABLE_STAGES = tuple(name for name, (_, _, build) in STAGE_MODULES.items() if build)
# What `--stage=all` runs, in order; each is skipped when its metrics.json already exists
# (export: when that still describes the latest checkpoints, see `export.is_current`).
PIPELINE = ('source', 'target_only', 'pixel', 'task', 'feature', 'export')


def validate_stage(stage):
  check_choice('--stage', stage, STAGES, problem=' is unknown')
