"""SRRL wrn_40_4 -> mobilenetv2_w1 on cifar100 (seed 003 Tables 6, 10; full-width MobileNetV2
(width_mult 1.0)): CE + L_FM + L_SR (MSE through the frozen teacher head); seed 003 CIFAR-100 recipe
(200 epochs, batch 128, lr 0.1 /10 at 100, 150).

  kdjax train --config configs/cifar100/srrl_wrn_40_4_mobilenetv2_w1.py:teacher --workdir runs/cifar100/srrl/teacher_wrn_40_4
  kdjax train --config configs/cifar100/srrl_wrn_40_4_mobilenetv2_w1.py --workdir runs/cifar100/srrl_wrn_40_4_mobilenetv2_w1
"""

from kdjax import seed_configs


def get_config(arg=None):
  return seed_configs.srrl('cifar100', 'wrn_40_4', 'mobilenetv2', arg=arg, protocol='seed003', student_kwargs={'width_mult': 1.0})
