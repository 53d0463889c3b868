"""Seed 002 Table IV (CIFAR-100), column ResNet-14, row DML (no pretrained teacher).

DML: a cohort of two students, each CE + tau^2 KL(p_peer || p_self) with tau 4 (the
tau^2 factor is this project's choice; the paper gives tau only), updated alternately
(paper Alg. 1). The evaluator reports member0, member1 and the ensemble; the paper
reports the best member on the test set.

  kdjax train --config configs/cifar100/seed002/dml_peers_resnet14.py --workdir runs/cifar100/seed002/dml_peers_resnet14

Five seeds as in the paper: add --config.seed=<s> and use --workdir runs/cifar100/seed002/dml_peers_resnet14_s<s>.
"""

from kdjax import seed002


def get_config(arg=None):
  del arg
  return seed002.config('cifar100', 'dml', 'resnet14')
