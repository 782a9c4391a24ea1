"""GTA5 → Cityscapes (SPEC §4, paper Table 4): 19 classes, DRN-26 by default.

`--config.model.classifier=fcn8s` gives the paper's other network (VGG16-FCN8s, ImageNet
weights); set `--config.source.iterations=100000` with it, the release's FCN8s length.
The defaults are `configs/segmentation.py`'s, which are this pair's release settings.
"""

from configs import segmentation


def get_config():
  return segmentation.get_config()
