r"""Runs a few steps of one real stage on N CPU replicas and saves its per-step metrics and weights.

`tests/test_distribute.py` runs this once per replica count, each in a fresh process, because
logical CPU devices can only be configured before TensorFlow initialises:

  python tests/replica_check.py --stages=source,pixel --replicas=2 --data_dir=D --out=DIR

The stage comes from the real builders (`source.supervised_stage`, `pixel.build_stage`,
`feature.build_stage`) on `tests.test_helpers.tiny_config()`, run through `trainer.fit`, so what is
compared is exactly what training does. Its input is the stage's own `dataset_fn`: with one worker
the dataset is built once and MirroredStrategy deals consecutive per-replica batches to replicas 0,
1, ..., so the N-replica global batch is the same examples, in the same order, as the 1-replica one.

Dropout is on, at the networks' own rates, and also where the configs leave it off: the pixel
stage's generators get residual-block dropout 0.5 and the feature stage's D_feat dropout 0.5, so
every dropout layer of the project (LeNet's and DTN's spatial and dense dropout, the generator
blocks', D_feat's) is exercised. They are `cycada_tf.models.layers.GlobalBatchDropout` /
`GlobalBatchSpatialDropout2D`: the seed state is identical on every replica and each replica takes
its rows of one global-batch mask, so with the input dealt as above an example gets the same mask
for any replica count. Everything else that could differ (loss scaling, reductions, batch-norm
statistics, the image pool, the feature gate) is left in and compared too.

Several stages run one after the other in one process (TensorFlow starts once). Writes
DIR/result.npz with, per stage, `<stage>/metric/<name>` (one value per step, from the chief's
TensorBoard events), `<stage>/var/<model>/<variable path>` (final weights),
`<stage>/seed/<model>/<index>_<layer name>` (each dropout layer's final seed state, replica 0's
copy) and `<stage>/replica_spread/<name>` (largest difference between the replicas' copies of
replica-local state and of the dropout seed states, which must be 0).
"""

import argparse
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

STAGES = ('source', 'dtn', 'dtn_local_bn', 'pixel', 'pixel_online', 'feature')
# DTN runs 2 steps: on these digits its two runs part after that, from float32 rounding alone
# (measured and explained in tests/test_distribute.py). The control needs one: its first loss
# already differs.
STEPS = {'dtn': 2, 'dtn_local_bn': 1}


def build(stage_name, strategy, data_dir, model_dir):
  """The real stage called `stage_name` on a tiny config; returns (stage, replica-local state)."""
  import keras  # pylint: disable=g-import-not-at-top
  from cycada_tf import models
  from cycada_tf.data import pairs
  from cycada_tf.stages import common
  from cycada_tf.stages import feature
  from cycada_tf.stages import pixel
  from tests import conftest as test_helpers

  config = test_helpers.tiny_config(max_steps=0)
  ctx = test_helpers.make_context(model_dir, data_dir, config)
  ctx.strategy = strategy
  keras.utils.set_random_seed(ctx.seed)
  if stage_name in ('source', 'dtn', 'dtn_local_bn'):
    if stage_name != 'source':
      # DTN (batch norm) at 32×32×3: the same real digits, resized and made RGB.
      config.model.classifier = 'dtn'
      ctx.pair = pairs.resolve_pair(None, 'uci_digits', 'mnist_sample', image_shape=(32, 32, 3))
    config.source.batch_size = 16 if stage_name == 'source' else 8
    with strategy.scope():
      classifier = common.new_classifier(ctx)
    if stage_name == 'dtn_local_bn':
      # The control: per-replica batch statistics, to show the comparison notices them.
      # pylint: disable-next=protected-access
      for layer in classifier._flatten_layers(include_self=False):
        if isinstance(layer, keras.layers.BatchNormalization):
          layer.synchronized = False
    return common.supervised_stage(ctx, 'source', ctx.pair.source, classifier), {}
  if stage_name == 'pixel':
    # A pool as big as one global batch, so it fills in step 1 and swaps in the later steps.
    config.pixel.update(batch_size=4, pool_size=4, image_every_steps=1000)
    config.model.generator_dropout = 0.5
    with strategy.scope():
      classifier = common.new_classifier(ctx)
    stage, _, _ = pixel.build_stage(ctx, classifier)
    return stage, {name: pool for name, pool in stage.extra_state.items()}
  if stage_name == 'pixel_online':
    # The release's online semantic classifier (batch norm) at 32×32×1; its gate is shut in
    # step 1 (no update yet) and open from step 2 (a loss far below 1e9).
    ctx.pair = pairs.resolve_pair(None, 'uci_digits', 'mnist_sample', image_shape=(32, 32, 1))
    config.data.image_size = 32
    config.pixel.update(batch_size=4, pool_size=4, image_every_steps=1000,
                        semantic_classifier='online', semantic_gate_loss=1e9)
    with strategy.scope():
      classifier = common.new_classifier(ctx)
    stage, _, _ = pixel.build_stage(ctx, classifier)
    return stage, dict(stage.extra_state)
  if stage_name == 'feature':
    # D_feat's accuracy (a multiple of 1/32 here, so rounding cannot move it across the threshold)
    # is 15/32 in step 1 (gate shut) and 17/32 in step 2 (gate open: f_T's update, with the
    # config's task term, then shapes steps 3 and 4). Measured with task_weight=0 the 4 steps gave
    # 15/32, 17/32, 15/32, 16/32.
    config.feature.update(batch_size=16, gate_threshold=0.52)
    with strategy.scope():
      f_t = common.new_classifier(ctx)
      source_encoder = common.new_classifier(ctx)
      discriminator = common.build_network(models.build_feature_discriminator(dropout=0.5),
                                           (config.model.num_classes,))
    stage, _ = feature.build_stage(ctx, f_t, source_encoder, discriminator, ctx.pair.source,
                                   'feature')
    return stage, {}
  raise ValueError(f'unknown stage {stage_name!r}; valid: {", ".join(STAGES)}')


def run_stage(stage_name, strategy, args):
  """Trains `stage_name` for `args.steps` steps; returns its arrays keyed `<stage>/<what>/...`."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from cycada_tf import trainer
  from tests import conftest as test_helpers

  stage, local_state = build(stage_name, strategy, args.data_dir, args.out)
  stage.max_steps = STEPS.get(stage_name, args.steps)
  stage_dir = os.path.join(args.out, stage_name)
  trainer.fit(stage, stage_dir, strategy,
              trainer.TrainConfig(log_every_steps=1, checkpoint_every_steps=1000,
                                  steps_per_call=1))
  arrays = {}
  events = os.path.join(stage_dir, 'train')
  for tag in sorted(_scalar_tags(events)):
    if tag != 'examples_per_second':
      arrays[f'{stage_name}/metric/{tag}'] = np.array(test_helpers.scalars(events, tag))
  for name, model in stage.models.items():
    for variable in model.weights:
      arrays[f'{stage_name}/var/{name}/{variable.path}'] = np.asarray(variable.numpy())
  for name, model in stage.models.items():
    layers = model._flatten_layers(include_self=False)  # pylint: disable=protected-access
    for i, layer in enumerate(layers):
      if getattr(layer, 'rate', 0) > 0 and hasattr(layer, 'seed_generator'):
        # Dropout's seed state: the same on every replica, advanced once per training call.
        copies = [c.numpy() for c in
                  strategy.experimental_local_results(layer.seed_generator.state.value)]
        key = f'{name}/{i}_{layer.name}'
        arrays[f'{stage_name}/seed/{key}'] = copies[0]
        arrays[f'{stage_name}/replica_spread/{key}'] = np.array(
            max(float(np.max(np.abs(c - copies[0]))) for c in copies))
  for name, module in local_state.items():
    for variable in getattr(module, 'variables', [module]):  # a module, or one variable
      copies = [c.numpy() for c in strategy.experimental_local_results(variable)]
      spread = max(float(np.max(np.abs(c.astype(np.float64) - copies[0]))) for c in copies)
      arrays[f'{stage_name}/replica_spread/{name}/{variable.name}'] = np.array(spread)
      arrays[f'{stage_name}/var/{name}/{variable.name}'] = copies[0]
  return arrays


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--stages', required=True,
                      help=f'comma-separated, run in this order in one process: {STAGES}')
  parser.add_argument('--replicas', type=int, required=True)
  parser.add_argument('--steps', type=int, default=4)
  parser.add_argument('--data_dir', required=True)
  parser.add_argument('--out', required=True)
  args = parser.parse_args()

  from cycada_tf import distribute  # pylint: disable=g-import-not-at-top
  strategy = distribute.create_strategy('auto', args.replicas)
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf
  tf.config.experimental.enable_op_determinism()
  assert strategy.num_replicas_in_sync == args.replicas, distribute.describe(strategy)
  arrays = {}
  for stage_name in args.stages.split(','):
    arrays.update(run_stage(stage_name, strategy, args))
  np.savez(os.path.join(args.out, 'result.npz'), **arrays)


def _scalar_tags(event_dir):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tags = set()
  for name in os.listdir(event_dir):
    for record in tf.data.TFRecordDataset(os.path.join(event_dir, name)):
      event = tf.compat.v1.Event.FromString(record.numpy())
      tags |= {v.tag for v in event.summary.value if v.HasField('tensor')
               and not v.tensor.string_val}
  return tags


if __name__ == '__main__':
  main()
