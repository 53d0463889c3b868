"""Hinton KD resnet20 -> resnet8 on digits (the quickstart; runs in a minute on 2 CPU cores).

  kdjax train --config configs/digits/teacher_resnet20.py --workdir runs/digits/teacher_resnet20
  kdjax train --config configs/digits/kd_resnet20_resnet8.py --workdir runs/digits/kd_resnet20_resnet8
"""

from kdjax import recipes


def get_config(arg=None):
  del arg
  return recipes.student('digits', 'resnet20', 'resnet8', recipes.kd_terms(weight=0.9, temperature=4.0),
                         ce_weight=0.1)
