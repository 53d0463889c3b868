"""Tf-KD (Yuan et al. 2020): teacher-free KD on CIFAR-100 ResNet-18 (self-training and the
manually designed regulariser).

  kdjax train --config configs/tfkd.py:arch=resnet18_cifar --workdir runs/cifar100/teacher_resnet18_cifar
  kdjax train --config configs/tfkd.py:method=tfkd_self --workdir runs/cifar100/tfkd_self_resnet18_cifar
  kdjax train --config configs/tfkd.py:method=tfkd_reg --workdir runs/cifar100/tfkd_reg_resnet18_cifar

Official constants (PyTorch KLDivLoss mean reduction, hence the multipliers):
  tfkd_self   0.05 CE + 0.95 KL, tau 6, multiplier 50; the teacher is a trained copy of the
              student (RepDistiller recipe, `arch=resnet18_cifar`).
  tfkd_reg    0.9 CE + 0.1 KL to a hand-made distribution (correct class 0.99), tau 20,
              multiplier 100.
Recipe (`common.tfkd_cifar100`): 200 epochs, batch 128, lr 0.1, 1 warm-up epoch, x0.2 at 60/120/160.
"""

from __future__ import annotations

from configs import common, rd_cifar100

ARCHS = ('resnet18_cifar',)
METHODS = {
    'tfkd_self': (0.05, {'tfkd_self': dict(method='tfkd_self', weight=0.95, temperature=6.0,
                                           multiplier=50.0)}),
    'tfkd_reg': (0.9, {'tfkd_reg': dict(method='tfkd_reg', weight=0.1, correct_prob=0.99,
                                         temperature=20.0, multiplier=100.0)}),
}


def _parse(arg):
  a = common.parse_arg(arg, method='tfkd_self', arch='')
  if a.arch:
    common.choose('arch', a.arch, ARCHS)
  common.choose('method', a.method, METHODS)
  return a


def get_config(arg=None):
  a = _parse(arg)
  if a.arch:  # the self-training teacher: the RepDistiller recipe
    return common.rd_cifar100(a.arch)
  arch = ARCHS[0]
  c = common.tfkd_cifar100(arch)
  if a.method == 'tfkd_self':
    common.with_teacher(c, arch, rd_cifar100.teacher_dir(arch))
  ce, terms = METHODS[a.method]
  return common.with_terms(c, terms, ce)


def workdir(arg):
  a = _parse(arg)
  return rd_cifar100.teacher_dir(a.arch) if a.arch else f'runs/cifar100/{a.method}_{ARCHS[0]}'


def cells():
  return [f'arch={x}' for x in ARCHS] + [f'method={m}' for m in METHODS]


REJECTED = {}
