"""SRRL wrn_40_4 -> wrn_16_4 on cifar100 (seed 003 Tables 1, 6, 9, 10): CE + L_FM + L_SR (MSE through
the frozen teacher head); seed 003 CIFAR-100 recipe (200 epochs, batch 128, lr 0.1 /10 at 100, 150).

Table 1 rows: `:fm_only` (L_FM at conv4), `:sr_only` (L_SR at conv4), (none) (both at conv4),
`:layers=conv2`, `:layers=conv3`, `:layers=conv2+3+4` (L_FM + L_SR at WRN group 1 / group 2 /
groups 1, 2 and the last map; L_SR at an earlier layer goes through AdaIN into the teacher's map
there and the rest of the frozen teacher).

  kdjax train --config configs/cifar100/srrl_wrn_40_4_wrn_16_4.py:teacher --workdir runs/cifar100/srrl/teacher_wrn_40_4
  kdjax train --config configs/cifar100/srrl_wrn_40_4_wrn_16_4.py --workdir runs/cifar100/srrl_wrn_40_4_wrn_16_4
"""

from kdjax import seed_configs


def get_config(arg=None):
  return seed_configs.srrl('cifar100', 'wrn_40_4', 'wrn_16_4', arg=arg, protocol='seed003')
