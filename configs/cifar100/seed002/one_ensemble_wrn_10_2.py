"""Seed 002 Table IV (CIFAR-100), column WRN-10-2, row ONE (no pretrained teacher).

ONE: 3 branches of the student sharing stem + blocks 1-2, gated ensemble teacher, tau 3,
trained "as per paper" (ONE recipe: 300 epochs, lr 0.1 /10 at 150 and 225, wd 1e-4) with
the Zagoruyko augmentation. The evaluator reports every branch{i}/logits and the
ensemble; the paper reports the best branch on the test set. ce_weight 0: the term
computes all cross-entropies. Model one_<arch> = kdjax.models.one.create_one(<arch>).

  kdjax train --config configs/cifar100/seed002/one_ensemble_wrn_10_2.py --workdir runs/cifar100/seed002/one_ensemble_wrn_10_2

Five seeds as in the paper: add --config.seed=<s> and use --workdir runs/cifar100/seed002/one_ensemble_wrn_10_2_s<s>.
"""

from kdjax import seed002


def get_config(arg=None):
  del arg
  return seed002.config('cifar100', 'one', 'wrn_10_2')
