"""GTA5 → Cityscapes (docs/method.md §4, paper Table 4): 19 classes, DRN-26 by default.

`--config.model.classifier=fcn8s` gives the paper's other network (VGG16-FCN8s, ImageNet
weights); with it pass `--config.source.iterations=100000`,
`--config.target_only.iterations=100000` and `--config.task.iterations=100000`, the release's
FCN8s length (`synthia_fall_winter` sets them).
The defaults are `configs/segmentation.py`'s, which are this pair's release settings.
"""

from configs import segmentation


def get_config():
  return segmentation.get_config()
