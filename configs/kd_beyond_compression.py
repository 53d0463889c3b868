""""Knowledge Distillation Beyond Model Compression" (Sarfraz et al.), Tables III-VI.

  kdjax config list kd_beyond_compression
  kdjax train --config configs/kd_beyond_compression.py:data=cifar10,method=baseline,student=wrn_40_2 \
      --workdir runs/cifar10/kd_beyond_compression/teacher_wrn_40_2
  kdjax train --config configs/kd_beyond_compression.py:data=cifar10,method=kd,student=wrn_16_2 \
      --workdir runs/cifar10/kd_beyond_compression/kd_wrn_40_2_wrn_16_2
  # Table V / VI: the same cell on a noisy / imbalanced split (its teacher trained on that split)
  kdjax train --config configs/kd_beyond_compression.py:data=cifar10,method=kd,student=wrn_16_2,noise=0.4 ...

Five seeds per cell as in the paper (`--config.seed=<s>`, one workdir each); `kdjax report`
gives mean +- std. `method=baseline` trains the student from scratch; the ResNet-26 and
WRN-40-2 baselines are the teachers (Table II) of the ResNet and WRN students.

Recipe (Zagoruyko): reflect-pad-4 crop + flip, SGD momentum 0.9, 200 epochs, batch 128,
lr 0.1 x0.2 at 60/120/150; weight decay not stated (5e-4 as the AT code).
Choices the paper leaves open: DML's KL is tau^2-scaled at tau 4; BSS base samples are correct
for both networks; ONE uses its own recipe ("as per paper": 300 epochs, /10 at 150, 225,
wd 1e-4); ONE/DML report every branch / member and the ensemble.
"""

from __future__ import annotations

from configs import common, rd_cifar100

# method -> (CE weight, terms); fitnet / fsp are two-stage, one / dml teacher-free.
METHODS = {
    'baseline': None,
    'kd': (0.1, common.KD),                                            # Hinton: alpha 0.9, tau 4
    'bss': (1.0, {'bss': dict(method='bss', weight=1.0, temperature=4.0, attack_size=32, steps=10,
                              step_size=0.3, clamp=2.5, base='both')}),
    'fitnet': 'two-stage',   # 100-epoch hint stage (block 2, W = [0, 1, 0]), then Hinton KD
    'fsp': 'two-stage',      # 100-epoch FSP stage (blocks 1-3, W = [1, 3, 1]), then Hinton KD
    'at': (1.0, {'at': dict(method='at', weight=1000.0)}),            # beta 1000, blocks 1-3
    'sp': (1.0, {'sp': dict(method='sp', weight=3000.0)}),            # gamma 3000, block 3
    'rkd_d': (1.0, {'rkd_d': dict(method='rkd_d', weight=25.0)}),
    'rkd_a': (1.0, {'rkd_a': dict(method='rkd_a', weight=50.0)}),
    'rkd_da': (1.0, {'rkd': dict(method='rkd', weight=1.0, distance_weight=25.0, angle_weight=50.0)}),
    'one': (0.0, {'one': dict(method='one', weight=1.0, temperature=3.0, rampup_epochs=80.0)}),
    'dml': (0.0, {'dml': dict(method='dml', weight=1.0, temperature=4.0, tau_squared=True,
                              reduction='mean')}),  # cohort of 2, alternating updates
}
TEACHER = {'resnet': 'resnet26', 'wrn': 'wrn_40_2'}
STUDENTS = ('resnet8', 'resnet14', 'resnet20', 'resnet26', 'wrn_10_2', 'wrn_16_2', 'wrn_28_2',
            'wrn_40_2')
DATASETS = ('cifar10', 'cifar100')
NOISE_RATES = (0.2, 0.4, 0.6)          # Table V, CIFAR-10, WRN-40-2 -> WRN-16-2
IMBALANCE_GAMMAS = (0.2, 0.6, 1.0, 2.0)  # Table VI, 5000 / 250 images per largest / smallest class


def teacher_arch(student: str) -> str:
  return TEACHER['wrn' if student.startswith('wrn') else 'resnet']


def setting(noise: float, imbalance: float) -> str:
  """'' (clean), 'noise0.2' or 'imb0.6': the sub-folder of the runs."""
  if noise and imbalance:
    raise ValueError('the paper varies label noise and imbalance separately.')
  if noise:
    common.choose('noise', noise, NOISE_RATES)
    return f'noise{noise:g}'
  if imbalance:
    common.choose('imbalance', imbalance, IMBALANCE_GAMMAS)
    return f'imb{imbalance:g}'
  return ''


def _dir(a, name):
  tag = setting(a.noise, a.imbalance)
  return f'runs/{a.data}/kd_beyond_compression/' + (f'{tag}/' if tag else '') + name


def zagoruyko(a, arch: str):
  c = common.sgd(common.base(a.data, arch), epochs=200, lr=0.1, batch=128, wd=5e-4,
                 boundaries=(60, 120, 150), factor=0.2)
  c.data.update(dict(crop_padding=4, pad_mode='reflect', flip=True, label_noise=float(a.noise),
                     imbalance_gamma=float(a.imbalance), imbalance_max=5000, imbalance_min=250))
  return c


def _parse(arg):
  a = common.parse_arg(arg, data='cifar10', method='kd', student='wrn_16_2', noise=0.0,
                       imbalance=0.0)
  common.choose('data', a.data, DATASETS)
  common.choose('method', a.method, METHODS)
  common.choose('student', a.student, STUDENTS)
  if a.noise or a.imbalance:
    setting(a.noise, a.imbalance)
    if a.data != 'cifar10':
      raise ValueError('label noise and imbalance runs are on cifar10 only (Tables V, VI).')
    allowed = ('wrn_16_2', 'wrn_40_2') if a.method == 'baseline' else ('wrn_16_2',)
    common.choose('student (noise / imbalance tables)', a.student, allowed)
  return a


def get_config(arg=None):
  a = _parse(arg)
  m, s = a.method, a.student
  if m == 'baseline':
    return zagoruyko(a, s)
  if m == 'one':
    c = zagoruyko(a, f'one_{s}')
    common.sgd(c, epochs=300, lr=0.1, batch=128, wd=1e-4, boundaries=(150, 225))
    return common.with_terms(c, *reversed(METHODS[m]))
  if m == 'dml':
    c = zagoruyko(a, s)
    c.model.cohort = (s, s)
    return common.with_terms(c, *reversed(METHODS[m]))
  t = teacher_arch(s)
  c = common.with_teacher(zagoruyko(a, s), t, _dir(a, f'teacher_{t}'))
  if m in ('fitnet', 'fsp'):
    common.with_terms(c, common.KD, 0.1)
    c.stages = (rd_cifar100.init_stage(f'{m}_2stage', t, s, c.optim.lr), common.stage('main'))
    return c
  return common.with_terms(c, *reversed(METHODS[m]))


def workdir(arg):
  a = _parse(arg)
  if a.method == 'baseline':
    return _dir(a, f'teacher_{a.student}')
  slot = {'one': 'ensemble', 'dml': 'peers'}.get(a.method, teacher_arch(a.student))
  return _dir(a, f'{a.method}_{slot}_{a.student}')


def cells():
  out = [f'data={d},method={m},student={s}' for d in DATASETS for m in METHODS for s in STUDENTS]
  for key, values in (('noise', NOISE_RATES), ('imbalance', IMBALANCE_GAMMAS)):
    for v in values:
      out.append(f'data=cifar10,method=baseline,student=wrn_40_2,{key}={v:g}')
      out += [f'data=cifar10,method={m},student=wrn_16_2,{key}={v:g}' for m in METHODS]
  return out


REJECTED = {}
