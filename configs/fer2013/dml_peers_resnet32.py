"""Self-Guidance (seed 001) Table 4, FER-2013 column, row DML; target network ResNet-32.

DML with a cohort of three ResNet-32s (the table lists 1.4M parameters = 3 x 0.47M),
paper form: each CE + mean over peers of KL(p_peer || p_self), tau 1, alternating updates.
Paper: 31.91% top-1 error. The evaluator reports member0..2 and the ensemble.
Recipe (Self-Guidance): SGD Nesterov 0.9, wd 1e-4, batch 128, 300 epochs, lr 0.1 /10 at
150 and 225.
Data: the Kaggle fer2013.csv, resized to 32x32; pass --config.data.path=/path/to/fer2013.csv.

  kdjax train --config configs/fer2013/dml_peers_resnet32.py --workdir runs/fer2013/dml_peers_resnet32
"""

from kdjax import seed002


def get_config(arg=None):
  del arg
  return seed002.seed001_online('fer2013', 'dml', 'resnet32')
