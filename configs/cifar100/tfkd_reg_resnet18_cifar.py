"""Tf-KD's virtual-teacher regulariser on CIFAR-100 ResNet-18 (no teacher network).

Official config: alpha_r 0.1 (CE weight 0.9, term weight 0.1), tau_r 20, correct-class
probability 0.99, multiplier 100 (METHODS.md section 1); Tf-KD recipe.

  kdjax train --config configs/cifar100/tfkd_reg_resnet18_cifar.py --workdir runs/cifar100/tfkd_reg_resnet18_cifar
"""

from kdjax import recipes


def get_config(arg=None):
  del arg
  c = recipes.tfkd_cifar100('resnet18_cifar')
  c.distill.ce_weight = 0.9
  with c.distill.unlocked():
    c.distill.terms = {'tfkd_reg': dict(method='tfkd_reg', weight=0.1, correct_prob=0.99,
                                        temperature=20.0, multiplier=100.0)}
  return c
