"""Hinton KD resnet20 -> resnet8 on digits (the quickstart; a minute on 2 CPU cores).

  kdjax train --config configs/digits/teacher_resnet20.py --workdir runs/digits/teacher_resnet20
  kdjax train --config configs/digits/kd_resnet20_resnet8.py --workdir runs/digits/kd_resnet20_resnet8

Loss: 0.1 CE + 0.9 tau^2 KL(p_t^tau || p_s^tau), tau 4 (RepDistiller's KD weights).
The same run as `configs/digits.py:method=kd,teacher=resnet20,student=resnet8`.
"""

from kdjax.config import ConfigDict, base_config


def get_config(arg=None):
  del arg
  c = base_config()
  c.data.name = 'digits'
  c.data.crop_padding = 1
  c.data.flip = False
  c.model.name = 'resnet8'
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

  c.teacher.arch = 'resnet20'
  c.teacher.checkpoint = 'runs/digits/teacher_resnet20'   # the teacher's workdir
  c.distill.ce_weight = 0.1
  with c.distill.unlocked():
    c.distill.terms = ConfigDict({'kd': dict(method='kd', weight=0.9, temperature=4.0)})
  return c
