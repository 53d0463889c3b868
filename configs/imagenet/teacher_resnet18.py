"""Train resnet18 from scratch on imagenet2012 (a teacher, or a student baseline).

  kdjax train --config configs/imagenet/teacher_resnet18.py --workdir runs/imagenet2012/teacher_resnet18
"""

from kdjax import recipes


def get_config(arg=None):
  del arg
  return recipes.teacher('imagenet2012', 'resnet18')
