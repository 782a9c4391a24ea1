"""CyCADA networks (docs/method.md §3): task nets, generators and discriminators, by config name."""

from cycada_tf.models.classifiers import CLASSIFIERS
from cycada_tf.models.classifiers import DTN
from cycada_tf.models.classifiers import LeNet
from cycada_tf.models.classifiers import build_classifier
from cycada_tf.models.discriminators import IMAGE_DISCRIMINATORS
from cycada_tf.models.discriminators import ConvDiscriminator
from cycada_tf.models.discriminators import FeatureDiscriminator
from cycada_tf.models.discriminators import PatchGAN
from cycada_tf.models.discriminators import build_feature_discriminator
from cycada_tf.models.discriminators import build_image_discriminator
from cycada_tf.models.generators import GENERATORS
from cycada_tf.models.generators import DigitGenerator
from cycada_tf.models.generators import InstanceNormalization
from cycada_tf.models.generators import ReflectionPad2D
from cycada_tf.models.generators import ResidualBlock
from cycada_tf.models.generators import ResnetGenerator
from cycada_tf.models.generators import ValidConv2D
from cycada_tf.models.generators import build_generator
from cycada_tf.models.generators import instance_norm
from cycada_tf.models.layers import GlobalBatchDropout
from cycada_tf.models.layers import GlobalBatchSpatialDropout2D
from cycada_tf.models.layers import global_batch_dropout

__all__ = [
    'CLASSIFIERS', 'DTN', 'LeNet', 'build_classifier',
    'IMAGE_DISCRIMINATORS', 'ConvDiscriminator', 'FeatureDiscriminator', 'PatchGAN',
    'build_feature_discriminator', 'build_image_discriminator',
    'GENERATORS', 'DigitGenerator', 'InstanceNormalization', 'ReflectionPad2D', 'ResidualBlock',
    'ResnetGenerator', 'ValidConv2D', 'build_generator', 'instance_norm',
    'GlobalBatchDropout', 'GlobalBatchSpatialDropout2D', 'global_batch_dropout',
]
