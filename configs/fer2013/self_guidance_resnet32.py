"""Self-Guidance resnet32 on FER-2013 (Kaggle fer2013.csv), 32x32 (seed 001 Tables 3, 4): the CIFAR
recipe. Pass the data with the config argument `path=...` or --config.data.path.

  kdjax train --config configs/fer2013/self_guidance_resnet32.py:path=/data/fer2013.csv --workdir runs/fer2013/self_guidance_resnet32
  kdjax train --config configs/fer2013/self_guidance_resnet32.py:baseline,path=/data/fer2013.csv --workdir runs/fer2013/sg_baseline_resnet32
"""

from kdjax import seed_configs


def get_config(arg=None):
  return seed_configs.self_guidance('fer2013', 'resnet32', arg=arg)
