"""Shared defaults for every digit experiment (docs/method.md §3): LeNet-sized 28×28×1 images.

Each pair's config file starts from `get_config()` here and changes only what differs, so an
override such as `--config.source.epochs=5` means the same thing for every pair.

The networks, losses, padding, initialisation, epoch lengths and the feature stage follow the
authors' release, and so do the supervised stages' optimiser and length (Adam 1e-4, 100 epochs
of batch 128: under two minutes a seed on the offline pairs, so no compute reason to differ);
the pixel stage's optimiser and batch are the release's and its epochs are set per pair. Every
setting that differs from the release or the paper is listed in `docs/deviations.md` with its
override.
"""

import ml_collections


def _optimizer_section(epochs, batch_size, learning_rate, beta_1=0.9, beta_2=0.999):
  return dict(epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
              beta_1=beta_1, beta_2=beta_2)


def get_config():
  """Shared defaults; see the module docstring for which of them are the release's."""
  config = ml_collections.ConfigDict()
  config.seed = 0
  # Where to stop early in tests and benches: 0 means "run the configured epochs".
  config.max_steps = 0

  config.data = ml_collections.ConfigDict(dict(
      image_size=28,
      channels=1,
      shuffle_buffer=10_000,
      cache=True,
  ))
  config.model = ml_collections.ConfigDict(dict(
      classifier='lenet',              # lenet | dtn
      num_classes=10,
      generator='digit',               # digit (paper) | resnet9 (release)
      generator_dropout=0.0,
      generator_filters=64,
      discriminator_filters=64,
      image_discriminator='patchgan',  # patchgan (release) | conv6 (paper)
      discriminator_padding='pad1',    # PatchGAN: pad1 (release's padw=1) | same
      gan_init='normal',               # pixel-stage weights: normal N(0, 0.02) (release) | glorot
      instance_norm_affine=False,      # release: InstanceNorm2d(affine=False)
      feature_discriminator_input='logits',  # logits (release) | features
  ))
  config.train = ml_collections.ConfigDict(dict(
      log_every_steps=50,        # progress line, TensorBoard scalars, NaN check
      checkpoint_every_steps=200,
      steps_per_call=10,         # compiled steps per tf.function call
      jit_compile=False,         # XLA-compile each step (see docs/performance.md)
      precision='fp32',          # fp32 | bf16 (Keras mixed_bfloat16; cycada_tf/precision.py)
      kernels='auto',            # auto | stock | cpu_tuned (cycada_tf/kernels.py)
      filter_gradient='auto',    # auto | swapped | native: cpu_tuned's bf16 conv filter gradient
      max_checkpoints_to_keep=2,
      epochs_per_iterator=10,    # epochs read through one tf.data iterator (trainer.py)
      # source/target_only/task: log the source- and target-test accuracy (TensorBoard
      # `monitor/*`, monitoring only) every N epochs and after the last; 0 turns it off. Not 1:
      # a UCI epoch is 11 steps and evaluating 1,360 test images after each cost ~75 % of the
      # stage's training time (README "TensorBoard")
      monitor_every_epochs=5,
  ))

  # One setting for f_S, the oracle and the task network, the release's train_task_net: Adam
  # 1e-4, batch 128, 100 epochs (the offline pairs had Adam 1e-3 for 20 epochs until the section
  # on it in docs/results/uci_mnist.md)
  supervised = _optimizer_section(epochs=100, batch_size=128, learning_rate=1e-4)
  config.source = ml_collections.ConfigDict(supervised)
  config.target_only = ml_collections.ConfigDict(supervised)

  config.pixel = ml_collections.ConfigDict(dict(
      # batch 100: the paper's and the release's (offline pairs: 64 until docs/results/uci_mnist.md)
      _optimizer_section(epochs=20, batch_size=100, learning_rate=2e-4, beta_1=0.5),
      decay_epochs=10,             # linear decay to 0 over the last N epochs; 0 disables
      pool_size=50,
      gan_weight_st=2.0,
      gan_weight_ts=1.0,
      # 1: the paper's digit pixel stage weights all losses equally, and the release's
      # SVHN→MNIST script uses 1; 10 is CycleGAN's own default (configs/segmentation.py)
      cycle_weight=1.0,
      identity_weight=0.0,
      semantic_weight=1.0,
      semantic_labels='predicted',  # predicted (paper Eq. 4) | true (release, S→T term)
      # source: the frozen f_S (paper Eq. 4) | online: the release's small classifier trained on
      # real source during the stage (needs images of 31 px or more; `model.discriminator_filters`
      # wide, as the release's ndf), its semantic terms zeroed while its last loss is above
      # `semantic_gate_loss`; Adam at its own learning rate
      semantic_classifier='source',
      semantic_classifier_learning_rate=1e-3,
      semantic_gate_loss=1.0,
      image_every_steps=500,
      # longer: an epoch is the larger domain (CycleGAN's unaligned dataset; the release's
      # SVHN→MNIST loader) | shorter: the smaller
      epoch_length='longer',
  ))
  config.task = ml_collections.ConfigDict(dict(
      supervised,
      init_from='scratch',  # scratch (release's train_task_net) | source (f_S's weights)
  ))
  config.feature = ml_collections.ConfigDict(dict(
      _optimizer_section(epochs=200, batch_size=128, learning_rate=1e-5),
      discriminator_learning_rate=1e-5,
      from_stage='task',        # task (pixel+feat) | source (feature only, ADDA)
      source_encoder='init',    # init: frozen copy of the starting model (release) | source: f_S
      gate_threshold=0.6,
      gate_window=1,            # steps averaged for the gate (segmentation: 100)
      stop_patience_epochs=1,   # idle epochs in a row that stop the stage (release: 1)
      # shorter: zip(source_loader, target_loader) ends with the smaller domain (release) | longer
      epoch_length='shorter',
      # train: the source encoder and f_T both in training mode, dropout on (release's
      # net.train()) | inference: both without dropout. Never one of each (D_feat would see it).
      encoder_mode='train',
      # f_T's source-side task loss in each f_T update, beside the adversarial loss (paper
      # Eq. 6's f_T terms); 0 is the release's ADDA step, adversarial loss only.
      task_weight=0.0,
  ))
  config.eval = ml_collections.ConfigDict(dict(batch_size=500))
  return config
