"""Hinton KD, resnet32x4 -> resnet8x4 on CIFAR-100, every value written out (RepDistiller recipe).

  kdjax train --config configs/rd_cifar100.py:arch=resnet32x4 --workdir runs/cifar100/teacher_resnet32x4
  kdjax train --config configs/examples/kd.py --workdir runs/cifar100/kd_resnet32x4_resnet8x4

Loss: 0.1 CE + 0.9 tau^2 KL(p_t^tau || p_s^tau), tau 4. Same cell as
`configs/rd_cifar100.py:method=kd,teacher=resnet32x4,student=resnet8x4`.
"""

from kdjax.config import ConfigDict, base_config


def get_config(arg=None):
  del arg
  c = base_config()
  c.data.name = 'cifar100'           # random crop (pad 4) + flip: the schema's defaults
  c.data.drop_remainder = False      # keep the last partial batch (782 steps at 64), as RD
  c.model.name = 'resnet8x4'
  with c.model.kwargs.unlocked():  # PyTorch's unbiased BN running variance, as RepDistiller
    c.model.kwargs.bn_unbiased_running_var = True
  c.epochs = 240
  c.optim.batch_size = 64
  c.optim.lr = 0.05
  c.optim.momentum = 0.9
  c.optim.weight_decay = 5e-4
  c.optim.schedule = 'piecewise'
  c.optim.boundaries_epochs = (150, 180, 210)
  c.optim.decay_factor = 0.1

  c.teacher.arch = 'resnet32x4'
  c.teacher.checkpoint = 'runs/cifar100/teacher_resnet32x4'
  c.distill.ce_weight = 0.1
  with c.distill.unlocked():
    c.distill.terms = ConfigDict({'kd': dict(method='kd', weight=0.9, temperature=4.0)})
  return c
