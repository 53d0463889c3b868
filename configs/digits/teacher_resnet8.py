"""Train resnet8 from scratch on digits (a teacher, or a student baseline).

  kdjax train --config configs/digits/teacher_resnet8.py --workdir runs/digits/teacher_resnet8
"""

from kdjax import recipes


def get_config(arg=None):
  del arg
  return recipes.teacher('digits', 'resnet8')
