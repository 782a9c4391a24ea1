"""SVHN → MNIST (docs/method.md §3): DTN on 32×32×3, ResNet-9 generators, PatchGAN, as released."""

from configs import base


def get_config():
  config = base.get_config()
  config.data.update(image_size=32, channels=3)
  config.model.update(classifier='dtn', generator='resnet9', generator_dropout=0.5,
                      image_discriminator='patchgan')
  # Release: 75 epochs of a 100 + 100 linear-decay schedule; weights 2·GAN(S→T) + 1·GAN(T→S)
  # + 1·cycle (base's); the semantic loss through the release's online classifier, with the
  # true source labels on the S→T side.
  config.pixel.update(epochs=75, decay_epochs=0, semantic_labels='true',
                      semantic_classifier='online')
  config.feature.update(epochs=200)
  return config
