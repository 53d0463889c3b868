"""Train resnet34 from scratch on imagenet2012 (a teacher, or a student baseline).

  kdjax train --config configs/imagenet/teacher_resnet34.py --workdir runs/imagenet2012/teacher_resnet34
"""

from kdjax import recipes


def get_config(arg=None):
  del arg
  return recipes.teacher('imagenet2012', 'resnet34')
