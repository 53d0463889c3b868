"""Self-Guidance resnet32 on cifar10 (seed 001 Tables 1, 2, 5): stochastic-depth sub-network (p_L 0.5)
+ expected network, CE + CE + 0.25 * 9 * KL; 300 epochs, Nesterov, wd 1e-4, lr 0.1 /10 at 150, 225.

  kdjax train --config configs/cifar10/self_guidance_resnet32.py --workdir runs/cifar10/self_guidance_resnet32
  kdjax train --config configs/cifar10/self_guidance_resnet32.py:baseline --workdir runs/cifar10/sg_baseline_resnet32
  kdjax train --config configs/cifar10/self_guidance_resnet32.py --workdir runs/cifar10/self_guidance_resnet32_lam0.5 --config.distill.terms.self_guidance.lam=0.5
"""

from kdjax import seed_configs


def get_config(arg=None):
  return seed_configs.self_guidance('cifar10', 'resnet32', arg=arg)
