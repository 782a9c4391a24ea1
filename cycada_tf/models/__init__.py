"""CyCADA networks (docs/method.md §3): task nets, generators and discriminators, by config name."""

from cycada_tf.models.classifiers import CLASSIFIERS
from cycada_tf.models.classifiers import DIGIT_CLASSIFIERS
from cycada_tf.models.classifiers import DTN
from cycada_tf.models.classifiers import SEGMENTATION_CLASSIFIERS
from cycada_tf.models.classifiers import LeNet
from cycada_tf.models.classifiers import OnlineSemanticClassifier
from cycada_tf.models.classifiers import build_classifier
from cycada_tf.models.discriminators import IMAGE_DISCRIMINATORS
from cycada_tf.models.discriminators import ConvDiscriminator
from cycada_tf.models.discriminators import FeatureDiscriminator
from cycada_tf.models.discriminators import PatchGAN
from cycada_tf.models.discriminators import ScoreMapFeatureDiscriminator
from cycada_tf.models.discriminators import build_feature_discriminator
from cycada_tf.models.discriminators import build_image_discriminator
from cycada_tf.models.discriminators import build_score_map_discriminator
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
from cycada_tf.models.segmentation import DRN26
from cycada_tf.models.segmentation import FCN8s
from cycada_tf.models.segmentation import vgg16_backbone

__all__ = [
    'CLASSIFIERS', 'DIGIT_CLASSIFIERS', 'DTN', 'LeNet', 'OnlineSemanticClassifier',
    'SEGMENTATION_CLASSIFIERS',
    'build_classifier',
    'DRN26', 'FCN8s', 'vgg16_backbone',
    'IMAGE_DISCRIMINATORS', 'ConvDiscriminator', 'FeatureDiscriminator', 'PatchGAN',
    'ScoreMapFeatureDiscriminator', 'build_feature_discriminator', 'build_image_discriminator',
    'build_score_map_discriminator',
    'GENERATORS', 'DigitGenerator', 'InstanceNormalization', 'ReflectionPad2D', 'ResidualBlock',
    'ResnetGenerator', 'ValidConv2D', 'build_generator', 'instance_norm',
    'GlobalBatchDropout', 'GlobalBatchSpatialDropout2D', 'global_batch_dropout',
]
