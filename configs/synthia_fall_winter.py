"""SYNTHIA-SEQS fall → winter (docs/method.md §4, paper Table 3): 13 classes, FCN8s as in the paper.

Front-view frames at their native 760x1280: the task networks train on crops of the full-size
frames and the pixel stage resizes them to width 1024, as for GTA5; the paper's table reports
FCN8s, with ImageNet VGG16 weights, and FCN8s's 100k iterations are set here.
"""

from configs import segmentation


def get_config():
  config = segmentation.get_config()
  config.model.update(classifier='fcn8s', num_classes=13)
  for section in (config.source, config.target_only, config.task):
    section.iterations = 100_000
  return config
