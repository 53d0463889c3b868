"""IPWD wrn_40_2 -> wrn_16_2 on cifar100 (seed 004 appendix Table 1), two-stage, CRD protocol: 0.1 CE +
CE(extra head) + 0.9 * 16 * mean w KL (tau 4), w = clip(1/pi, 1, 10) / mean (METHODS.md estimator).
IPWD* (Table 3): the config argument `star`.

  kdjax train --config configs/cifar100/teacher_wrn_40_2.py --workdir runs/cifar100/teacher_wrn_40_2
  kdjax train --config configs/cifar100/ipwd_wrn_40_2_wrn_16_2.py --workdir runs/cifar100/ipwd_wrn_40_2_wrn_16_2
  kdjax train --config configs/cifar100/ipwd_wrn_40_2_wrn_16_2.py:star --workdir runs/cifar100/ipwd_wrn_40_2_wrn_16_2_star
"""

from kdjax import seed_configs


def get_config(arg=None):
  return seed_configs.ipwd('wrn_40_2', 'wrn_16_2', arg=arg)
