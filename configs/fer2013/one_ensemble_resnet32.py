"""Self-Guidance (seed 001) Table 4, FER-2013 column, row ONE; target network ResNet-32.

ONE on ResNet-32 with 3 branches (1.18M parameters on 10 classes, as the table),
tau 3, 80-epoch ramp-up. Paper: 31.90% top-1 error. The evaluator reports every
branch and the gated ensemble. Model one_resnet32 = kdjax.models.one.create_one("resnet32").
Recipe (Self-Guidance): SGD Nesterov 0.9, wd 1e-4, batch 128, 300 epochs, lr 0.1 /10 at
150 and 225.
Data: the Kaggle fer2013.csv, resized to 32x32; pass --config.data.path=/path/to/fer2013.csv.

  kdjax train --config configs/fer2013/one_ensemble_resnet32.py --workdir runs/fer2013/one_ensemble_resnet32
"""

from kdjax import seed002


def get_config(arg=None):
  del arg
  return seed002.seed001_online('fer2013', 'one', 'resnet32')
