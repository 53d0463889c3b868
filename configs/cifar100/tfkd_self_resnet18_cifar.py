"""Tf-KD self-training on CIFAR-100 ResNet-18: a trained copy of the student is the teacher.

Official config: alpha 0.95, tau 6, multiplier 50 with PyTorch's KLDivLoss mean
reduction (METHODS.md section 1); Tf-KD recipe (200 epochs, lr 0.1, x0.2 at 60/120/160).

  kdjax train --config configs/cifar100/teacher_resnet18_cifar.py --workdir runs/cifar100/teacher_resnet18_cifar
  kdjax train --config configs/cifar100/tfkd_self_resnet18_cifar.py --workdir runs/cifar100/tfkd_self_resnet18_cifar
"""

from kdjax import recipes


def get_config(arg=None):
  del arg
  c = recipes.tfkd_cifar100('resnet18_cifar')
  base = recipes.student('cifar100', 'resnet18_cifar', 'resnet18_cifar', {
      'tfkd_self': dict(method='tfkd_self', weight=0.95, temperature=6.0, multiplier=50.0)},
                         ce_weight=0.05)
  c.teacher = base.teacher
  c.distill = base.distill
  return c
