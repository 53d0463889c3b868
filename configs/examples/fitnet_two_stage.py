"""Two-stage FitNet, wrn_40_2 -> wrn_16_2 on CIFAR-100: a hint stage, then Hinton KD.

  kdjax train --config configs/examples/fitnet_two_stage.py --workdir runs/cifar100/fitnet2_wrn_40_2_wrn_16_2
  # shortened: 1 hint epoch, then 2 epochs of KD
  kdjax train --config configs/examples/fitnet_two_stage.py --workdir /tmp/fitnet \
      --config.stages.0.epochs=1 --config.epochs=2

Stage `hint` (100 epochs, lr 0.001 /10 at 60, 80): MSE between a 1x1-conv regressor of the
student's stage-2 map and the teacher's, training only the student up to stage 2 and the
regressor (`trainable` regexes over 'student/...' and 'aux/<term>/...'), no CE.
Stage `main`: the top-level epochs, optim and distill (0.1 CE + 0.9 KD, tau 4), everything
trainable. A stage that does not set `epochs` runs the top-level `epochs`.
"""

from kdjax.config import ConfigDict, base_config


def get_config(arg=None):
  del arg
  c = base_config()
  c.data.name = 'cifar100'
  c.model.name = 'wrn_16_2'
  with c.model.kwargs.unlocked():  # PyTorch's unbiased BN running variance, as RepDistiller
    c.model.kwargs.bn_unbiased_running_var = True
  c.epochs = 240
  c.optim.batch_size = 64
  c.optim.lr = 0.05
  c.optim.weight_decay = 5e-4
  c.optim.boundaries_epochs = (150, 180, 210)

  c.teacher.arch = 'wrn_40_2'
  c.teacher.checkpoint = 'runs/cifar100/teacher_wrn_40_2'
  c.distill.ce_weight = 0.1
  with c.distill.unlocked():
    c.distill.terms = ConfigDict({'kd': dict(method='kd', weight=0.9, temperature=4.0)})
  c.stages = (
      dict(name='hint', epochs=100,
           trainable=(r'^student/conv1/', r'^student/(block1_|block2_)', r'^aux/fitnet/'),
           optim=dict(lr=0.001, boundaries_epochs=(60, 80), warmup_epochs=0.0),
           distill=dict(ce_weight=0.0,
                        terms={'fitnet': dict(method='fitnet', weight=1.0, hint_layer=2)})),
      dict(name='main', trainable=()),
  )
  return c
