"""CRD + KD, resnet32x4 -> resnet8x4 on CIFAR-100, every value written out (RepDistiller recipe).

  kdjax train --config configs/examples/crd_kd.py --workdir runs/cifar100/crd_kd_resnet32x4_resnet8x4

Loss: CE + 0.8 CRD (16384 negatives, feature dim 128, NCE temperature 0.07: the method's
defaults) + 1.0 tau^2 KL at tau 4. Several terms are summed with their weights; each term
name is free, `method` picks the registered loss. Same cell as
`configs/rd_cifar100.py:method=crd_kd,teacher=resnet32x4,student=resnet8x4`.
"""

from kdjax.config import ConfigDict, base_config


def get_config(arg=None):
  del arg
  c = base_config()
  c.data.name = 'cifar100'
  c.data.drop_remainder = False      # keep the last partial batch (782 steps at 64), as RD
  c.model.name = 'resnet8x4'
  with c.model.kwargs.unlocked():  # PyTorch's unbiased BN running variance, as RepDistiller
    c.model.kwargs.bn_unbiased_running_var = True
  c.epochs = 240
  c.optim.batch_size = 64
  c.optim.lr = 0.05
  c.optim.weight_decay = 5e-4
  c.optim.boundaries_epochs = (150, 180, 210)

  c.teacher.arch = 'resnet32x4'
  c.teacher.checkpoint = 'runs/cifar100/teacher_resnet32x4'
  c.distill.ce_weight = 1.0
  with c.distill.unlocked():
    c.distill.terms = ConfigDict({
        'crd': dict(method='crd', weight=0.8),
        'kd': dict(method='kd', weight=1.0, temperature=4.0),
    })
  return c
