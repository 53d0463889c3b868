"""Self-Guidance (seed 001) Table 2, CIFAR100 column, row DML; target network ResNet-32.

DML with a cohort of three ResNet-32s (the table lists 1.4M parameters = 3 x 0.47M),
paper form: each CE + mean over peers of KL(p_peer || p_self), tau 1, alternating updates.
Paper: 28.47% top-1 error. The evaluator reports member0..2 and the ensemble.
Recipe (Self-Guidance): SGD Nesterov 0.9, wd 1e-4, batch 128, 300 epochs, lr 0.1 /10 at
150 and 225.

  kdjax train --config configs/cifar100/dml_peers_resnet32.py --workdir runs/cifar100/dml_peers_resnet32
"""

from kdjax import seed002


def get_config(arg=None):
  del arg
  return seed002.seed001_online('cifar100', 'dml', 'resnet32')
