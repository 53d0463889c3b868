"""Self-Guidance resnet50 on RAF-DB basic (a folder: train/<class>/*, test/<class>/*), 32x32 (seed 001
Tables 3, 4): the CIFAR recipe. Pass the data with the config argument `path=...` or
--config.data.path.

  kdjax train --config configs/raf/self_guidance_resnet50.py:path=/data/raf_basic --workdir runs/raf/self_guidance_resnet50
  kdjax train --config configs/raf/self_guidance_resnet50.py:baseline,path=/data/raf_basic --workdir runs/raf/sg_baseline_resnet50
"""

from kdjax import seed_configs


def get_config(arg=None):
  return seed_configs.self_guidance('folder', 'resnet50', arg=arg)
