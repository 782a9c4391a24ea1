"""D_feat must not be able to tell the two sides of the feature stage apart by mode alone.

Both sides get the same domain (MNIST), the same network weights (f_T a copy of the source
encoder, not updated: learning rate 0) and differ only in their random batches. Whatever D_feat
learns is then noise, and its accuracy stays near chance. With the source side in inference mode
and f_T in training mode (the old code), dropout noise alone told them apart: about 77 % after
300 steps, with the gate open on nearly every batch.
"""

import keras
import pytest

from cycada_tf import models
from cycada_tf import trainer
from cycada_tf import workflow
from cycada_tf.stages import common
from cycada_tf.stages import feature
from tests.conftest import make_context
from tests.conftest import tiny_config

# Trains real stages end to end: excluded from the fast tier (-m "not slow").
pytestmark = pytest.mark.slow


@pytest.fixture(scope='module')
def source_dir(tmp_path_factory, offline_data_dir):
  ctx = make_context(tmp_path_factory.mktemp('run'), offline_data_dir)
  workflow.run('source', ctx)  # 1 epoch of LeNet on UCI digits: logits with some structure
  return ctx


def discriminator_accuracy_on_identical_sides(ctx, mode, steps=300):
  config = tiny_config(max_steps=steps)
  config.feature.update(encoder_mode=mode, learning_rate=0.0, epochs=10)
  config.train.update(log_every_steps=100, checkpoint_every_steps=1000, steps_per_call=50)
  run_ctx = make_context(ctx.model_dir, ctx.data_dir, config)
  keras.utils.set_random_seed(0)
  f_t = common.load_classifier(run_ctx, 'source', needed_by='test')
  source_encoder = common.load_classifier(run_ctx, 'source', needed_by='test')
  discriminator = common.build_network(models.build_feature_discriminator(), (10,))
  stage, gate = feature.build_stage(run_ctx, f_t, source_encoder, discriminator,
                                    run_ctx.pair.target, f'feature_{mode}')
  result = trainer.fit(stage, run_ctx.stage_dir(f'feature_{mode}'), run_ctx.strategy,
                       trainer.TrainConfig.from_config(config.train))
  assert result.steps == steps
  return result.final_metrics  # means over steps 201–300


@pytest.mark.parametrize('mode', feature.ENCODER_MODES)
def test_discriminator_cannot_separate_identical_sides(source_dir, mode):
  means = discriminator_accuracy_on_identical_sides(source_dir, mode)
  assert means['discriminator_accuracy'] < 0.62, means
  assert means['updated'] < 0.5, means  # the 60 % gate opens on a minority of batches


def test_unknown_encoder_mode_is_refused(source_dir):
  config = tiny_config()
  config.feature.encoder_mode = 'eval'
  with pytest.raises(Exception, match='encoder_mode'):
    workflow.run('feature', make_context(source_dir.model_dir, source_dir.data_dir, config))


def test_feature_epoch_is_the_smaller_domain_as_the_release_zip(source_dir):
  """zip(source_loader, target_loader) ends with the smaller domain: UCI's 1,437 images."""
  config = tiny_config()
  ctx = make_context(source_dir.model_dir, source_dir.data_dir, config)
  stage, _ = feature.build(ctx, fresh=True)
  assert stage.steps_per_epoch == 1437 // config.feature.batch_size
  config.feature.epoch_length = 'longer'
  stage, _ = feature.build(ctx, fresh=True)
  assert stage.steps_per_epoch == 4000 // config.feature.batch_size
