"""IE-AT resnet34 -> resnet18 on imagenet2012 (seed 000, Table 2 / Table 5): 30 AE epochs on the frozen
teacher, then 160 epochs (Nesterov, lr 0.1 /10 at 80, 120), lambda_inh = lambda_exp = 100, split
0.5/0.5.

  kdjax train --config configs/imagenet/ie_at_resnet34_resnet18.py:teacher --workdir runs/imagenet2012/ie_kd/teacher_resnet34
  kdjax train --config configs/imagenet/ie_at_resnet34_resnet18.py --workdir runs/imagenet2012/ie_at_resnet34_resnet18
"""

from kdjax import seed_configs


def get_config(arg=None):
  return seed_configs.ie_kd('imagenet2012', 'resnet34', 'resnet18', variant='at', arg=arg)
