"""SRRL resnet50_cifar -> vgg8 on cifar100 (seed 003 Table 12): CE + L_FM + L_SR (MSE through the
frozen teacher head); CRD protocol (240 epochs, batch 64, lr 0.05/0.01 /10 at 150, 180, 210).

  kdjax train --config configs/cifar100/teacher_resnet50_cifar.py --workdir runs/cifar100/teacher_resnet50_cifar
  kdjax train --config configs/cifar100/srrl_resnet50_cifar_vgg8.py --workdir runs/cifar100/srrl_resnet50_cifar_vgg8
"""

from kdjax import seed_configs


def get_config(arg=None):
  return seed_configs.srrl('cifar100', 'resnet50_cifar', 'vgg8', arg=arg, protocol='crd')
