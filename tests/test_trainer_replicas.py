"""`trainer.fit` on 2 mirrored CPU replicas: across iterator groups, epoch boundaries and a resume.

A toy stage whose examples carry their id and epoch counts, in a checkpointed variable, how often
each (epoch, example) pair was trained on. Every epoch must see every example exactly once and
the step count must be exact, whether the run goes through in one go or is stopped mid-epoch
and resumed. With one input pipeline feeding two replicas a global step reads two per-replica
batches; cutting epochs in global steps instead (the old bug) ran out of data half-way.
"""

import pytest

from tests.conftest import run_python

SCRIPT = r'''
import sys
import numpy as np
import tensorflow as tf
from cycada_tf import distribute, trainer

strategy = distribute.create_strategy('auto', cpu_replicas=2)
assert strategy.num_replicas_in_sync == 2
EXAMPLES, BATCH, EPOCHS = 24, 4, 5  # 6 steps per epoch
model_dir = sys.argv[1]

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
stage, counts = build()
if len(sys.argv) > 2:  # stop mid-epoch, mid-iterator-group, then resume in a new fit
  stage.max_steps = int(sys.argv[2])
  first = trainer.fit(stage, model_dir, strategy, config)
  assert first.steps == int(sys.argv[2]), first.steps
  stage, counts = build()
result = trainer.fit(stage, model_dir, strategy, config)
assert result.steps == 30 and result.epochs_completed == 5, result
assert result.final_metrics['examples'] == 1.0, result.final_metrics
seen = counts.numpy()
assert (seen == 1).all(), seen
print('OK', result.steps)
'''


@pytest.mark.slow
@pytest.mark.parametrize('stop_at', [None, 15, 16])
def test_two_replicas_see_every_example_once_per_epoch(tmp_path, stop_at):
  # 15: mid-epoch, in the second iterator group, after the step-12 checkpoint; 16: on a save.
  arguments = [str(tmp_path)] + ([str(stop_at)] if stop_at else [])
  run_python(SCRIPT, 'OK 30', argv=arguments)
