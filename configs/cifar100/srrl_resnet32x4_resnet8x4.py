"""SRRL resnet32x4 -> resnet8x4 on cifar100 (seed 003 Table 11): CE + L_FM + L_SR (MSE through the
frozen teacher head); CRD protocol (240 epochs, batch 64, lr 0.05/0.01 /10 at 150, 180, 210).

  kdjax train --config configs/cifar100/teacher_resnet32x4.py --workdir runs/cifar100/teacher_resnet32x4
  kdjax train --config configs/cifar100/srrl_resnet32x4_resnet8x4.py --workdir runs/cifar100/srrl_resnet32x4_resnet8x4
"""

from kdjax import seed_configs


def get_config(arg=None):
  return seed_configs.srrl('cifar100', 'resnet32x4', 'resnet8x4', arg=arg, protocol='crd')
