"""Generated street scenes, flat-coloured → textured and noisy (offline, 8 classes, 64x128).

The segmentation pipeline of `configs/segmentation.py` sized for a 2-core CPU: the whole
`--stage=all` must finish in well under half an hour. How each setting that differs from
`segmentation` was chosen (never from target-test mIoU):
- DRN-26 at a quarter of its width (1.3M parameters) and ResNet-9 translators with 16 filters:
  the compute budget.
- Images stay at their generated 64x128 (`resize_width=0`); training crops are 64x96 and
  the pixel stage's 64x64, the same fractions of the image as the release's crops of GTA5.
- Adam at 1e-3 for the supervised stages, 12 epochs of batch 16 (744 steps): the release's
  SGD at 1e-3 (momentum 0.99) is sized for 100k steps; the length is the compute budget.
- Pixel stage: 5 epochs (2 of them decaying) of batch 4, the budget again.
- Feature stage: Adam at 1e-4 for f_T and D_feat, batch 8, the gate over the last 100 steps
  like the release, 5 epochs of the smaller domain (625 steps).
- Monitoring every 4 epochs: a test-split evaluation costs about a quarter of an epoch here.
"""

from configs import segmentation


def _adam(section, epochs, batch_size, learning_rate):
  section.update(optimizer='adam', epochs=epochs, batch_size=batch_size,
                 learning_rate=learning_rate, iterations=0, weight_decay=0.0)
  section.beta_1, section.beta_2 = 0.9, 0.999


def get_config():
  config = segmentation.get_config()
  config.data.update(crop_size=(64, 96), resize_width=0, cache=True, shuffle_buffer=1_000)
  config.model.update(classifier='drn26', num_classes=8, width=0.25, generator_filters=16,
                      discriminator_filters=16)
  config.train.update(log_every_steps=50, checkpoint_every_steps=200, steps_per_call=10,
                      monitor_every_epochs=4)
  for section in (config.source, config.target_only, config.task):
    _adam(section, epochs=12, batch_size=16, learning_rate=1e-3)
  config.pixel.update(epochs=5, decay_epochs=2, batch_size=4, crop_size=(64, 64),
                      resize_width=0, image_every_steps=500)
  _adam(config.feature, epochs=5, batch_size=8, learning_rate=1e-4)
  config.feature.discriminator_learning_rate = 1e-4
  config.eval.update(batch_size=50, grid_examples=4)
  return config
