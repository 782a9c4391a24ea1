"""Shared defaults for every segmentation experiment (docs/method.md §4).

Each segmentation pair's config file starts from `get_config()` here and changes only what
differs. The section and setting names are those of the digit configs (`configs/base.py`), so
`--config.source.epochs=5` or `--config.feature.gate_window=100` mean the same thing in both
families; segmentation adds the crop and resize settings, the SGD settings and the backbone's
initial weights.

What follows the paper and the release (`jhoffman/cycada_release`'s `scripts/train_fcn.py`,
`train_fcn_adda.py` and its CycleGAN options), and what differs, is listed per setting in
`docs/deviations.md` ("Segmentation"). The real pairs' files set the release's sizes; the offline
pair's file sizes everything for a 2-core CPU.
"""

import ml_collections

from configs import base


def _sgd_section(epochs, batch_size, learning_rate, momentum, weight_decay, iterations=0):
  # `iterations` > 0 ends the stage after that many steps (the release counts iterations, not
  # epochs); `epochs` is then an upper bound that is never the limit.
  return dict(epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
              optimizer='sgd', momentum=momentum, weight_decay=weight_decay,
              iterations=iterations)


def get_config():
  """Segmentation defaults: DRN-26, the release's SGD settings, CycleGAN's pixel stage."""
  config = base.get_config()
  config.data = ml_collections.ConfigDict(dict(
      channels=3,
      # Training reads random crops of (height, width) of the (resized) images, flipped at random
      # with probability 1/2 (`pipeline`); labels follow every step with nearest-neighbour.
      crop_size=(768, 768),
      # Images (and training labels) are first resized to this width, the height keeping the
      # aspect ratio, both rounded to a multiple of 8 (the networks' output stride); 0 keeps
      # them as they are (docs/method.md §4: the task networks train on crops of full-size
      # images; the pixel stage sets its own). Evaluation compares with the labels at full
      # resolution.
      resize_width=0,
      flip=True,
      shuffle_buffer=1_000,
      # Real pairs are tens of GB decoded: read them from the TFDS files every epoch.
      cache=False,
  ))
  config.model.update(
      classifier='drn26',        # drn26 | fcn8s
      num_classes=19,
      # fcn8s' VGG16: imagenet (downloaded, or Keras' cache) | random (explicit, printed) |
      # PATH of a keras.applications.VGG16(include_top=False) weights file
      backbone_weights='imagenet',
      width=1.0,                 # drn26's channel multiplier; 1.0 is the paper's network
      fcn_spatial_dropout=False,  # fcn8s' fc6/fc7 dropout: per element | per channel (release)
      generator='resnet9',       # CycleGAN's ResNet-9 and 70x70 PatchGAN (docs/method.md §4)
      generator_dropout=0.0,
      generator_filters=64,
      discriminator_filters=64,
      image_discriminator='patchgan',
      discriminator_padding='pad1',
      # D_feat on the score maps: 1x1 convs num_classes -> 512 -> 256 -> 2, dropout 0.5
      feature_discriminator_input='logits',
  )
  # Segmentation logs less often: a step is large.
  config.train.update(log_every_steps=20, checkpoint_every_steps=500, steps_per_call=1,
                      monitor_every_epochs=1)
  # The release's train_fcn.py: SGD, momentum 0.99, weight decay 5e-4, batch 2 of 768 crops.
  # DRN-26: 115k iterations (FCN8s: 100k; synthia_fall_winter sets it, gta5_cityscapes's
  # docstring says how to).
  config.source = ml_collections.ConfigDict(_sgd_section(
      epochs=1_000, batch_size=2, learning_rate=1e-3, momentum=0.99, weight_decay=5e-4,
      iterations=115_000))
  config.target_only = ml_collections.ConfigDict(_sgd_section(
      epochs=1_000, batch_size=2, learning_rate=1e-3, momentum=0.99, weight_decay=5e-4,
      iterations=115_000))
  # CycleGAN for segmentation (docs/method.md §4): 400x400 crops of width-1024 images, batch 1, 20
  # epochs (10 constant + 10 linear decay), no semantic loss (the paper's choice for memory).
  # `task` translates whole source images at this scale and resizes G_ST's output back.
  config.pixel.update(
      epochs=20, decay_epochs=10, batch_size=1, crop_size=(400, 400), resize_width=1024,
      semantic_weight=0.0, gan_weight_st=1.0, gan_weight_ts=1.0, cycle_weight=10.0,
      image_every_steps=1_000)
  config.task = ml_collections.ConfigDict(dict(
      _sgd_section(epochs=1_000, batch_size=2, learning_rate=1e-3, momentum=0.99,
                   weight_decay=5e-4, iterations=115_000),
      init_from='scratch'))
  # train_fcn_adda.py: SGD momentum 0.99 at 1e-5 for f_T and D_feat, one source and one
  # target crop per step, f_T's adversarial loss weighted 0.1, the gate on the mean D_feat
  # accuracy over the last 100 steps.
  config.feature = ml_collections.ConfigDict(dict(
      _sgd_section(epochs=1_000, batch_size=1, learning_rate=1e-5, momentum=0.99,
                   weight_decay=5e-4, iterations=100_000),
      discriminator_learning_rate=1e-5,
      adversarial_weight=0.1,
      from_stage='task',
      source_encoder='init',
      gate_threshold=0.6,
      gate_window=100,
      stop_patience_epochs=1,
      epoch_length='shorter',
      encoder_mode='train',
      task_weight=0.0,
  ))
  # Whole images of different sizes cannot share a batch.
  config.eval = ml_collections.ConfigDict(dict(batch_size=1, grid_examples=4))
  return config
