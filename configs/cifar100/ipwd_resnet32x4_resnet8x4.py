"""IPWD resnet32x4 -> resnet8x4 on cifar100 (seed 004 appendix Tables 3, 4), two-stage, CRD protocol:
0.1 CE + CE(extra head) + 0.9 * 16 * mean w KL (tau 4), w = clip(1/pi, 1, 10) / mean (METHODS.md
estimator). IPWD* (Table 3): the config argument `star`.
IPWD-dagger (Table 4): the argument `dagger` (the propensity's KD-aware output from an extra
head trained with plain KD only).

  kdjax train --config configs/cifar100/teacher_resnet32x4.py --workdir runs/cifar100/teacher_resnet32x4
  kdjax train --config configs/cifar100/ipwd_resnet32x4_resnet8x4.py --workdir runs/cifar100/ipwd_resnet32x4_resnet8x4
  kdjax train --config configs/cifar100/ipwd_resnet32x4_resnet8x4.py:star --workdir runs/cifar100/ipwd_resnet32x4_resnet8x4_star
  kdjax train --config configs/cifar100/ipwd_resnet32x4_resnet8x4.py:dagger --workdir runs/cifar100/ipwd_resnet32x4_resnet8x4_dagger
"""

from kdjax import seed_configs


def get_config(arg=None):
  return seed_configs.ipwd('resnet32x4', 'resnet8x4', arg=arg)
