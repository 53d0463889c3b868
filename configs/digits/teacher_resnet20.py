"""Train resnet20 from scratch on digits (the quickstart's teacher), every value written out.

  kdjax train --config configs/digits/teacher_resnet20.py --workdir runs/digits/teacher_resnet20

The same run as `configs/digits.py:arch=resnet20`.
"""

from kdjax.config import base_config


def get_config(arg=None):
  del arg
  c = base_config()
  c.data.name = 'digits'
  c.data.crop_padding = 1   # one-pixel jitter; digits are not mirror-symmetric
  c.data.flip = False
  c.model.name = 'resnet20'
  c.epochs = 15
  c.optim.batch_size = 64
  c.optim.lr = 0.05
  c.optim.weight_decay = 5e-4
  c.optim.schedule = 'cosine'
  c.optim.warmup_epochs = 1.0
  c.eval_every_epochs = 5
  c.checkpoint_every_epochs = 5
  c.log_every_steps = 20
  c.eval_batch_size = 360
  return c
