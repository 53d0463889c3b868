"""IE-DML resnet32 + wrn_28_10 on cifar100 (seed 000 Table 4): two networks from scratch, each with an
online auto-encoder (lambda_rec 0.8) and lambda_inh = lambda_exp = 50; DML order (update member 0,
then member 1). Recipe: the official DML config (200 epochs, batch 64, lr 0.1 /10 at 60, 120, 180).

  kdjax train --config configs/cifar100/ie_dml_resnet32_wrn_28_10.py --workdir runs/cifar100/ie_dml_resnet32_wrn_28_10
"""

from kdjax import seed_configs


def get_config(arg=None):
  return seed_configs.ie_dml('resnet32', 'wrn_28_10', arg=arg)
