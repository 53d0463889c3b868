"""Deep mutual learning: two resnet32 peers trained together on CIFAR-100, no teacher.

  kdjax train --config configs/examples/dml.py --workdir runs/cifar100/dml_resnet32

Each member: CE + KL(p_peer || p_self) (tau 1, not tau^2-scaled: DML's paper form); the
members are updated one after another, each after a fresh forward pass (the `dml` term's
`alternate=True` default). `model.cohort` lists the members; the evaluation reports
member0/top1, member1/top1 and the ensemble. Recipe: the official DML CIFAR-100 code
(200 epochs, batch 64, lr 0.1 /10 at 60, 120, 180, Nesterov, wd 5e-4).
"""

from kdjax.config import ConfigDict, base_config


def get_config(arg=None):
  del arg
  c = base_config()
  c.data.name = 'cifar100'
  c.model.name = 'resnet32'
  c.model.cohort = ('resnet32', 'resnet32')
  c.epochs = 200
  c.optim.batch_size = 64
  c.optim.lr = 0.1
  c.optim.nesterov = True
  c.optim.weight_decay = 5e-4
  c.optim.boundaries_epochs = (60, 120, 180)
  c.distill.ce_weight = 0.0   # the dml term adds each member's CE
  with c.distill.unlocked():
    c.distill.terms = ConfigDict({'dml': dict(method='dml', weight=1.0, temperature=1.0,
                                              tau_squared=False, reduction='mean')})
  return c
