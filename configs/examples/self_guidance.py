"""Self-Guidance on resnet110, CIFAR-100: online self-distillation through stochastic depth.

  kdjax train --config configs/examples/self_guidance.py --workdir runs/cifar100/self_guidance_resnet110

Loss (ce_weight 0; the term adds it): CE(sub) + CE(full) + lam tau^2 KL(p_full || p_sub),
lam 0.25, tau 3, where `sub` is the network with stochastic depth (linearly decaying survival
probability down to p_L = final_survival_prob = 0.5) and `full` the whole network. Recipe:
SGD Nesterov 0.9, wd 1e-4, batch 128, 300 epochs, lr 0.1 /10 at 150, 225. Same cell as
`configs/self_guidance.py:data=cifar100,arch=resnet110`.
"""

from kdjax.config import ConfigDict, base_config


def get_config(arg=None):
  del arg
  c = base_config()
  c.data.name = 'cifar100'
  c.model.name = 'resnet110'
  c.epochs = 300
  c.optim.batch_size = 128
  c.optim.lr = 0.1
  c.optim.nesterov = True
  c.optim.weight_decay = 1e-4
  c.optim.boundaries_epochs = (150, 225)
  c.distill.ce_weight = 0.0
  with c.distill.unlocked():
    c.distill.terms = ConfigDict({'self_guidance': dict(
        method='self_guidance', lam=0.25, temperature=3.0, stop_teacher=False,
        final_survival_prob=0.5)})
  return c
