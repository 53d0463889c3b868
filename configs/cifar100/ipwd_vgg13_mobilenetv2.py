"""IPWD vgg13 -> mobilenetv2 on cifar100 (seed 004 appendix Table 1), two-stage, CRD protocol: 0.1 CE +
CE(extra head) + 0.9 * 16 * mean w KL (tau 4), w = clip(1/pi, 1, 10) / mean (METHODS.md estimator).
IPWD* (Table 3): the config argument `star`.

  kdjax train --config configs/cifar100/teacher_vgg13.py --workdir runs/cifar100/teacher_vgg13
  kdjax train --config configs/cifar100/ipwd_vgg13_mobilenetv2.py --workdir runs/cifar100/ipwd_vgg13_mobilenetv2
  kdjax train --config configs/cifar100/ipwd_vgg13_mobilenetv2.py:star --workdir runs/cifar100/ipwd_vgg13_mobilenetv2_star
"""

from kdjax import seed_configs


def get_config(arg=None):
  return seed_configs.ipwd('vgg13', 'mobilenetv2', arg=arg)
