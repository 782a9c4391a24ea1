"""`trainer.fit` on 2 mirrored CPU replicas: across iterator groups, epoch boundaries and a resume.

A toy stage whose examples carry their id and epoch counts, in a checkpointed variable, how often
each (epoch, example) pair was trained on. Every epoch must see every example exactly once and
the step count must be exact, whether the run goes through in one go or is stopped mid-epoch
and resumed. With one input pipeline feeding two replicas a global step reads two per-replica
batches; cutting epochs in global steps instead (the old bug) ran out of data half-way.
"""

import pytest

from tests.conftest import run_python

# The three scenarios share one interpreter (logical CPUs need a fresh one; TF's import and the
# strategy's set-up are most of its time), each in its own model_dir with its own variables.
# A scenario that fails prints FAIL and its traceback, and the others still run.
SCENARIOS = (None, 15, 16)
SCRIPT = r'''
import os
import sys
import traceback
import tensorflow as tf
from cycada_tf import distribute, trainer

strategy = distribute.create_strategy('auto', cpu_replicas=2)
assert strategy.num_replicas_in_sync == 2
EXAMPLES, BATCH, EPOCHS = 24, 4, 5  # 6 steps per epoch

def build():
  with strategy.scope():
    counts = tf.Variable(tf.zeros([EPOCHS, EXAMPLES]), trainable=False,
                         aggregation=tf.VariableAggregation.SUM)
  def replica_step(batch):
    ids, epochs = batch
    delta = tf.scatter_nd(tf.stack([epochs, ids], axis=1), tf.ones_like(ids, tf.float32),
                          [EPOCHS, EXAMPLES])
    counts.assign_add(delta)
    return {'examples': tf.cast(tf.size(ids), tf.float32) / BATCH}
  def dataset_fn(input_context, epoch):
    ids = tf.data.Dataset.range(EXAMPLES).shuffle(EXAMPLES, seed=epoch)
    ids = ids.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    pairs = ids.map(lambda i: (tf.cast(i, tf.int32), tf.constant(epoch, tf.int32)))
    return pairs.batch(input_context.get_per_replica_batch_size(BATCH), drop_remainder=True)
  stage = trainer.Stage(name='toy', models={}, optimizers={}, replica_step=replica_step,
                        dataset_fn=dataset_fn, steps_per_epoch=EXAMPLES // BATCH,
                        epochs=EPOCHS, global_batch_size=BATCH,
                        extra_state={'counts': counts})
  return stage, counts

config = trainer.TrainConfig(log_every_steps=4, checkpoint_every_steps=4, steps_per_call=3,
                             epochs_per_iterator=2)

def scenario(model_dir, stop_at):
  stage, counts = build()
  if stop_at:  # stop mid-epoch, mid-iterator-group, then resume in a new fit
    stage.max_steps = stop_at
    first = trainer.fit(stage, model_dir, strategy, config)
    assert first.steps == stop_at, first.steps
    stage, counts = build()
  result = trainer.fit(stage, model_dir, strategy, config)
  assert result.steps == 30 and result.epochs_completed == 5, result
  assert result.final_metrics['examples'] == 1.0, result.final_metrics
  seen = counts.numpy()
  assert (seen == 1).all(), seen
  return result.steps

for name in sys.argv[2:]:
  try:
    steps = scenario(os.path.join(sys.argv[1], name), None if name == 'None' else int(name))
    print('OK', steps, name, flush=True)
  except Exception:  # pylint: disable=broad-except
    print('FAIL', name, flush=True)
    traceback.print_exc()
'''


@pytest.fixture(scope='module')
def outcomes(tmp_path_factory):
  """stdout and stderr of one process that ran every scenario."""
  result = run_python(SCRIPT, 'OK', argv=[str(tmp_path_factory.mktemp('replicas'))] +
                      [str(stop_at) for stop_at in SCENARIOS])
  return result.stdout.splitlines(), result.stderr


@pytest.mark.slow
@pytest.mark.parametrize('stop_at', SCENARIOS)
def test_two_replicas_see_every_example_once_per_epoch(outcomes, stop_at):
  # 15: mid-epoch, in the second iterator group, after the step-12 checkpoint; 16: on a save.
  lines, stderr = outcomes
  assert f'OK 30 {stop_at}' in lines, stderr[-3000:]
