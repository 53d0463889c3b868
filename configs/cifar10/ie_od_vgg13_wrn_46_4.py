"""IE-OD vgg13 -> wrn_46_4 on cifar10 (seed 000, supplementary Table 2, small teacher -> large
student): 30 AE epochs on the frozen teacher, then 160 epochs (Nesterov, lr 0.1 /10 at 80, 120),
lambda_inh = lambda_exp = 50, split 0.5/0.5.

  kdjax train --config configs/cifar10/ie_od_vgg13_wrn_46_4.py:teacher --workdir runs/cifar10/ie_kd/teacher_vgg13
  kdjax train --config configs/cifar10/ie_od_vgg13_wrn_46_4.py --workdir runs/cifar10/ie_od_vgg13_wrn_46_4
"""

from kdjax import seed_configs


def get_config(arg=None):
  return seed_configs.ie_kd('cifar10', 'vgg13', 'wrn_46_4', variant='od', arg=arg)
