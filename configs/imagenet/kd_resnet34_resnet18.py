"""Hinton KD resnet34 -> resnet18 on imagenet2012 (CRD protocol: 0.5 CE + 0.9 KD, tau 4).

  kdjax train --config configs/imagenet/teacher_resnet34.py --workdir runs/imagenet2012/teacher_resnet34
  kdjax train --config configs/imagenet/kd_resnet34_resnet18.py --workdir runs/imagenet2012/kd_resnet34_resnet18
"""

from kdjax import recipes


def get_config(arg=None):
  del arg
  return recipes.student('imagenet2012', 'resnet34', 'resnet18', recipes.kd_terms(weight=0.9, temperature=4.0),
                         ce_weight=0.5)
