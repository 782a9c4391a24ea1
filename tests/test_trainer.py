"""The shared loop: resume, NaN guard, early stop, metric reduction — on a toy regression stage."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from cycada_tf import losses
from cycada_tf import trainer

BATCH = 8
NUM_EXAMPLES = 64  # 8 steps per epoch


def _data(epoch):
  rng = np.random.default_rng(100 + epoch)
  x = rng.normal(size=(NUM_EXAMPLES, 3)).astype(np.float32)
  y = (x @ np.array([1.0, -2.0, 0.5], np.float32))[:, None]
  return x, y


def toy_stage(strategy, epochs=3, scale=1.0, max_steps=0, on_epoch_end=None, dropout=0.0):
  with strategy.scope():
    layers = [keras.layers.Dropout(dropout, seed=7)] if dropout else []
    model = keras.Sequential(layers + [keras.layers.Dense(1, kernel_initializer='zeros')])
    model(tf.zeros((1, 3)))
    optimizer = keras.optimizers.SGD(0.05)
    optimizer.build(model.trainable_variables)

  def replica_step(batch):
    x, y = batch
    with tf.GradientTape() as tape:
      per_example = tf.reduce_mean(tf.square(model(x, training=True) * scale - y), axis=-1)
      loss = losses.average(per_example, BATCH)
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return {'loss': loss, 'examples': tf.cast(tf.shape(x)[0], tf.float32) / BATCH}

  def dataset_fn(input_context, epoch):
    x, y = _data(epoch)
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    return ds.batch(input_context.get_per_replica_batch_size(BATCH), drop_remainder=True)

  stage = trainer.Stage(name='toy', models={'model': model}, optimizers={'model': optimizer},
                        replica_step=replica_step, dataset_fn=dataset_fn, steps_per_epoch=8,
                        epochs=epochs, global_batch_size=BATCH, max_steps=max_steps,
                        on_epoch_end=on_epoch_end)
  return stage, model


CONFIG = trainer.TrainConfig(log_every_steps=4, checkpoint_every_steps=4, steps_per_call=3)


def test_fit_trains_and_reports(tmp_path):
  stage, model = toy_stage(tf.distribute.get_strategy())
  result = trainer.fit(stage, str(tmp_path), tf.distribute.get_strategy(), CONFIG)
  assert result.steps == 24 and result.epochs_completed == 3
  assert result.stop_reason == 'completed all steps'
  # The 'examples' metric is a share of the global batch: it must sum to exactly 1 per step.
  assert result.final_metrics['examples'] == pytest.approx(1.0)
  assert result.final_metrics['loss'] < 1.0
  assert tf.train.latest_checkpoint(trainer.checkpoint_dir(str(tmp_path))).endswith('-24')
  assert os.listdir(os.path.join(str(tmp_path), 'train'))  # TensorBoard events
  # Throughput after the tracing call, over the later steps only.
  assert 0 <= result.first_call_seconds < result.seconds
  assert result.examples_per_second > 0


def test_throughput_is_none_after_a_single_call(tmp_path):
  strategy = tf.distribute.get_strategy()
  stage, _ = toy_stage(strategy)
  stage.max_steps = 1
  result = trainer.fit(stage, str(tmp_path), strategy, CONFIG)
  assert result.steps == 1 and result.examples_per_second is None
  assert result.first_call_seconds is not None


def test_resume_matches_uninterrupted_run(tmp_path):
  strategy = tf.distribute.get_strategy()
  stage, straight = toy_stage(strategy)
  trainer.fit(stage, str(tmp_path / 'straight'), strategy, CONFIG)

  # A run "killed" after 11 steps (mid-epoch 2, between checkpoints 8 and 12) ...
  stage, _ = toy_stage(strategy, max_steps=11)
  trainer.fit(stage, str(tmp_path / 'resumed'), strategy, CONFIG)
  # ... and started again with the same command: it restores step 11 and finishes.
  stage, resumed = toy_stage(strategy)
  result = trainer.fit(stage, str(tmp_path / 'resumed'), strategy, CONFIG)
  assert result.steps == 24
  np.testing.assert_allclose(resumed.get_weights()[0], straight.get_weights()[0], rtol=1e-6)


def test_resume_restores_the_dropout_random_state(tmp_path):
  """Dropout masks after a resume are the uninterrupted run's (Keras does not checkpoint the
  seed state by itself: without it the resumed run drew the masks a fresh run starts with)."""
  strategy = tf.distribute.get_strategy()
  stage, straight = toy_stage(strategy, dropout=0.5)
  trainer.fit(stage, str(tmp_path / 'straight'), strategy, CONFIG)
  stage, _ = toy_stage(strategy, dropout=0.5, max_steps=12)
  trainer.fit(stage, str(tmp_path / 'resumed'), strategy, CONFIG)
  stage, resumed = toy_stage(strategy, dropout=0.5)
  trainer.fit(stage, str(tmp_path / 'resumed'), strategy, CONFIG)
  np.testing.assert_array_equal(resumed.get_weights()[0], straight.get_weights()[0])


def test_non_finite_loss_before_any_checkpoint_says_so(tmp_path):
  strategy = tf.distribute.get_strategy()
  stage, _ = toy_stage(strategy, scale=float('nan'))
  with pytest.raises(trainer.NonFiniteLossError) as caught:
    trainer.fit(stage, str(tmp_path), strategy, CONFIG)
  assert 'No checkpoint' in str(caught.value) and 'step 0' in str(caught.value)
  assert not os.path.exists(trainer.checkpoint_dir(str(tmp_path))) or not os.listdir(
      trainer.checkpoint_dir(str(tmp_path)))


def test_ctrl_c_names_the_last_checkpoint(tmp_path):
  """Ctrl-C becomes `Interrupted` saying which checkpoint a rerun resumes from."""
  strategy = tf.distribute.get_strategy()

  def press_ctrl_c(epoch, means):
    del means
    if epoch == 1:
      raise KeyboardInterrupt

  stage, _ = toy_stage(strategy, on_epoch_end=press_ctrl_c)
  with pytest.raises(trainer.Interrupted) as caught:
    trainer.fit(stage, str(tmp_path), strategy, CONFIG)
  # Epoch 1 ends at step 16; its checkpoint comes after the epoch's decision: ckpt-12 is kept.
  message = str(caught.value)
  assert 'step 16' in message and message.count('ckpt-12') == 1, message
  assert 'resumes from it' in message


def test_an_interrupted_save_is_removed_on_the_next_start(tmp_path):
  strategy = tf.distribute.get_strategy()
  stale = os.path.join(trainer.checkpoint_dir(str(tmp_path)), 'ckpt-4_temp')
  os.makedirs(os.path.join(stale, 'part-00000-of-00001'))
  stage, _ = toy_stage(strategy, max_steps=4)
  trainer.fit(stage, str(tmp_path), strategy, CONFIG)
  assert not os.path.exists(stale)
  assert tf.train.latest_checkpoint(trainer.checkpoint_dir(str(tmp_path))).endswith('ckpt-4')


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
  strategy = tf.distribute.get_strategy()
  stage, _ = toy_stage(strategy, max_steps=8)
  trainer.fit(stage, str(tmp_path), strategy, CONFIG)
  good = tf.train.latest_checkpoint(trainer.checkpoint_dir(str(tmp_path)))
  stage, _ = toy_stage(strategy, scale=float('nan'))
  with pytest.raises(trainer.NonFiniteLossError, match='loss.*NaN/Inf'):
    trainer.fit(stage, str(tmp_path), strategy, CONFIG)
  assert tf.train.latest_checkpoint(trainer.checkpoint_dir(str(tmp_path))) == good


def test_on_epoch_end_can_stop_early(tmp_path):
  seen = []

  def stop_after_first(epoch, means):
    seen.append((epoch, means['examples']))
    return 'enough' if epoch == 0 else None

  strategy = tf.distribute.get_strategy()
  stage, _ = toy_stage(strategy, on_epoch_end=stop_after_first)
  result = trainer.fit(stage, str(tmp_path), strategy, CONFIG)
  assert result.stop_reason == 'enough' and result.steps == 8
  assert seen == [(0, pytest.approx(1.0))]
  # Started again (say after a kill before the stage wrote its metrics), it stays stopped.
  stage, _ = toy_stage(strategy, on_epoch_end=stop_after_first)
  again = trainer.fit(stage, str(tmp_path), strategy, CONFIG)
  assert again.stop_reason == 'enough' and again.steps == 8 and len(seen) == 1


def test_resume_mid_epoch_gives_on_epoch_end_the_whole_epoch(tmp_path):
  """The stop rule's per-epoch sums are checkpointed: a resume keeps the steps before it."""
  strategy = tf.distribute.get_strategy()
  straight, resumed = [], []
  stage, _ = toy_stage(strategy, on_epoch_end=lambda e, means: straight.append(means))
  trainer.fit(stage, str(tmp_path / 'straight'), strategy, CONFIG)
  # Stopped at step 12 (mid-epoch 2, on a checkpoint), then started again.
  stage, _ = toy_stage(strategy, max_steps=12,
                       on_epoch_end=lambda e, means: resumed.append(means) if e == 0 else None)
  trainer.fit(stage, str(tmp_path / 'resumed'), strategy, CONFIG)
  stage, _ = toy_stage(strategy, on_epoch_end=lambda e, means: resumed.append(means))
  trainer.fit(stage, str(tmp_path / 'resumed'), strategy, CONFIG)
  assert len(resumed) == len(straight) == 3
  for got, want in zip(resumed, straight):
    assert got['examples'] == pytest.approx(1.0)
    assert got['loss'] == pytest.approx(want['loss'], rel=1e-5)


def _record_calls(monkeypatch):
  """Makes `fit` record the number of steps of every compiled call it makes."""
  calls = []
  make_run_steps = trainer.make_run_steps

  def recording_make_run_steps(*args):
    run_steps = make_run_steps(*args)

    def recorded(iterator, num_steps):
      calls.append(int(num_steps))
      return run_steps(iterator, num_steps)
    return recorded

  monkeypatch.setattr(trainer, 'make_run_steps', recording_make_run_steps)
  return calls


def test_calls_span_epochs_unless_the_stage_has_epoch_bookkeeping(tmp_path, monkeypatch):
  strategy = tf.distribute.get_strategy()
  config = trainer.TrainConfig(log_every_steps=100, checkpoint_every_steps=100, steps_per_call=5)
  calls = _record_calls(monkeypatch)
  stage, spanning = toy_stage(strategy)
  trainer.fit(stage, str(tmp_path / 'spanning'), strategy, config)
  assert calls == [5, 5, 5, 5, 4]  # 3 epochs of 8 steps

  calls.clear()
  epoch_means = []
  stage, per_epoch = toy_stage(strategy, on_epoch_end=lambda e, means: epoch_means.append(means))
  trainer.fit(stage, str(tmp_path / 'per_epoch'), strategy, config)
  assert calls == [5, 3] * 3
  assert [m['examples'] for m in epoch_means] == [pytest.approx(1.0)] * 3
  # The same batches in the same order, however the steps are grouped into calls.
  np.testing.assert_array_equal(spanning.get_weights()[0], per_epoch.get_weights()[0])


def test_write_json_atomically(tmp_path):
  path = tmp_path / 'sub' / 'metrics.json'
  trainer.write_json_atomically(str(path), {'b': 1, 'a': 0.5})
  assert path.read_text().startswith('{\n  "a": 0.5')
  assert [p.name for p in path.parent.iterdir()] == ['metrics.json']


def test_eta_leaves_out_the_first_calls_tracing(monkeypatch):
  """The first call took 100 s (tracing); then 10 steps took 1 s: 80 steps left are 8 s."""
  clock = [0.0]
  monkeypatch.setattr(trainer.time, 'perf_counter', lambda: clock[0])
  progress = trainer._Progress('toy', total_steps=100, global_batch_size=8, first_step=0)
  clock[0] = 100.0
  progress.restart(10)  # as `fit` does right after the first call
  line, rate = progress.line(10, {'loss': 1.0})  # that call's own log line
  assert rate is None and 'first call (tracing, compiling)' in line
  clock[0] = 101.0
  line, rate = progress.line(20, {'loss': 1.0})
  assert rate == 80.0 and line.endswith('ETA 0:00:08'), line


def test_checkpoint_fingerprint_is_of_values_not_variable_names(tmp_path):
  """Equal weights saved by differently named variables (Keras' per-process counters) match;
  one changed weight does not."""
  def save(name, value, directory):
    variable = tf.Variable(value, name=name)
    return tf.train.Checkpoint(model=tf.train.Checkpoint(kernel=variable)).write(
        str(tmp_path / directory / 'ckpt'))

  first = save('dense_1/kernel', [1.0, 2.0], 'a')
  renamed = save('dense_8/kernel', [1.0, 2.0], 'b')
  changed = save('dense_1/kernel', [1.0, 2.5], 'c')
  with open(first + '.index', 'rb') as f, open(renamed + '.index', 'rb') as g:
    assert f.read() != g.read()  # the files differ ...
  assert trainer.checkpoint_fingerprint(first) == trainer.checkpoint_fingerprint(renamed)
  assert trainer.checkpoint_fingerprint(first) != trainer.checkpoint_fingerprint(changed)


def test_log_window_and_final_metrics_survive_resumes(tmp_path):
  """Interrupted between two log steps, then resumed: the next logged means and the final
  metrics are the uninterrupted run's; and a rerun after the last checkpoint (killed before
  metrics.json) still reports them (it reported {} before)."""
  from tests.conftest import scalars  # pylint: disable=g-import-not-at-top
  strategy = tf.distribute.get_strategy()
  config = trainer.TrainConfig(log_every_steps=6, checkpoint_every_steps=8, steps_per_call=3)

  def ctrl_c_in_epoch_1(epoch, means):
    del means
    if epoch == 1:
      raise KeyboardInterrupt  # at step 16, before its checkpoint: resumes from step 8

  stage, _ = toy_stage(strategy, on_epoch_end=lambda epoch, means: None)
  straight = trainer.fit(stage, str(tmp_path / 'straight'), strategy, config)
  stage, _ = toy_stage(strategy, on_epoch_end=ctrl_c_in_epoch_1)
  with pytest.raises(trainer.Interrupted):
    trainer.fit(stage, str(tmp_path / 'resumed'), strategy, config)
  stage, _ = toy_stage(strategy, on_epoch_end=lambda epoch, means: None)
  resumed = trainer.fit(stage, str(tmp_path / 'resumed'), strategy, config)
  assert resumed.final_metrics == straight.final_metrics
  logged = {name: scalars(str(tmp_path / name / 'train'), 'loss')
            for name in ('straight', 'resumed')}
  # Steps 6, 12 (its window began before the resume at 8), 18, 24 in both; the resumed run's
  # first process also logged 12 before being interrupted at 16.
  assert logged['straight'] == [logged['resumed'][0]] + logged['resumed'][-3:]

  stage, _ = toy_stage(strategy, on_epoch_end=lambda epoch, means: None)
  rerun = trainer.fit(stage, str(tmp_path / 'resumed'), strategy, config)
  assert rerun.steps == 24 and rerun.final_metrics == straight.final_metrics


def test_epoch_end_every_runs_calls_across_the_epochs_in_between(tmp_path, monkeypatch):
  """`epoch_end_every=2` on 5 epochs of 8 steps: `on_epoch_end` after epochs 1, 3 and the last
  (4), with the means since its previous call; calls cut only there."""
  strategy = tf.distribute.get_strategy()
  config = trainer.TrainConfig(log_every_steps=100, checkpoint_every_steps=100, steps_per_call=6)
  calls = _record_calls(monkeypatch)
  seen = []
  stage, _ = toy_stage(strategy, epochs=5,
                       on_epoch_end=lambda epoch, means: seen.append((epoch, means['examples'])))
  stage.epoch_end_every = 2
  trainer.fit(stage, str(tmp_path), strategy, config)
  assert [epoch for epoch, _ in seen] == [1, 3, 4]
  assert all(examples == pytest.approx(1.0) for _, examples in seen)
  # Cuts at steps 16, 32 and 40 only (plus every 6 steps): 6 6 4 | 6 6 4 | 6 2
  assert calls == [6, 6, 4, 6, 6, 4, 6, 2]
