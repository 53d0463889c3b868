"""IE-AT resnet18 -> resnet34 on imagenet2012 (seed 000, supplementary Table 4: a small teacher
distilled into a larger student): 30 AE epochs on the frozen teacher, then 160 epochs (Nesterov,
lr 0.1 /10 at 80, 120), lambda_inh = lambda_exp = 100, split 0.5/0.5.

The teacher is a ResNet-18 trained with the IE-KD recipe (`:teacher`, below);
configs/imagenet/teacher_resnet18.py trains one with the generic recipe instead, usable
with --config.teacher.checkpoint=runs/imagenet2012/teacher_resnet18.

  kdjax train --config configs/imagenet/ie_at_resnet18_resnet34.py:teacher --workdir runs/imagenet2012/ie_kd/teacher_resnet18
  kdjax train --config configs/imagenet/ie_at_resnet18_resnet34.py --workdir runs/imagenet2012/ie_at_resnet18_resnet34
"""

from kdjax import seed_configs


def get_config(arg=None):
  return seed_configs.ie_kd('imagenet2012', 'resnet18', 'resnet34', variant='at', arg=arg)
