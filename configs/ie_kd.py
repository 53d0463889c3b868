"""IE-KD (Huang et al. 2021): inheritance and exploration KD, Tables 1, 2, 4-6 and supplementary.

  kdjax config list ie_kd
  kdjax train --config configs/ie_kd.py:data=cifar10,arch=resnet56 --workdir runs/cifar10/ie_kd/teacher_resnet56
  kdjax train --config configs/ie_kd.py:data=cifar10,method=ie_ft,teacher=resnet56,student=resnet20 \
      --workdir runs/cifar10/ie_kd/ie_ft_resnet56_resnet20
  # Table 5 (inheritance share), Table 6a (metric), Table 6b (weights): options on the same cell
  ...:data=cifar100,method=ie_ft,teacher=resnet110,student=resnet32,ratio=0.3
  ...:data=cifar100,method=ie_ft,teacher=resnet110,student=resnet32,metric=l2   (l1 | l2 | cos | partial_l2)
  ...:data=cifar100,method=ie_ft,teacher=resnet110,student=resnet32,metric=l1,exp_metric=cka
  ...:data=cifar100,method=ie_ft,teacher=resnet110,student=resnet32,inh=500,exp=50
  # Table 4 (IE-DML, CIFAR-100): two networks from scratch, member 0 = `student`
  kdjax train --config configs/ie_kd.py:data=cifar100,method=ie_dml,student=resnet32,peer=resnet110 ...

IE recipe (official code): SGD Nesterov 0.9, batch 128, lr 0.1; CIFAR 160 epochs /10 at 80, 120,
wd 5e-4; ImageNet 100 epochs /10 every 30, batch 256, wd 1e-4. Two stages: `ae` (30 epochs,
constant lr 0.1, only the auto-encoder on the frozen teacher's last map trains, L1
reconstruction), then `main` (student + both split encoders; lambda_inh = lambda_exp = 50,
100 on ImageNet). IE-DML uses the official DML recipe (200 epochs, batch 64, lr 0.1 /10 at
60, 120, 180, Nesterov, wd 5e-4) with lambda_rec 0.8.
Other options: rec=l2 (the paper's squared reconstruction), split=natural, ae_epochs=N.
Baseline columns (Table 1, Table 2, Supplementary Tables 1, 2, 4): KD, AT, FT, OD, Tf-KD (S),
CRD, FitNet, SP, CC, VID, RKD, PKT, AB, NST under the IE recipe with RepDistiller's weights
(the paper gives none), e.g. `...:data=cifar10,method=vid,teacher=resnet20,student=resnet56`;
Figure 1(b) is `method=ft,teacher=resnet20,student=resnet56` against `arch=resnet56` and IE-FT.
Table 4 rows: `method=dml` (paper form, tau 1) and `method=independent,student=X` (DML recipe).
CIFAR cells keep the last partial batch (`data.drop_remainder=False`, masked), as the official
code's DataLoader; ImageNet cells drop it.
The paper reports top-1 error: `kdjax report --error`.
"""

from __future__ import annotations

from configs import common, rd_cifar100, tfkd

VARIANTS = {'ie_at': 'at', 'ie_ft': 'ft', 'ie_od': 'od'}   # Table 1's IE-AT / IE-FT / IE-OD
PAIRS = {
    # Table 1 and Supplementary Table 1 (CIFAR-10).
    'cifar10': (('resnet56', 'resnet20'), ('wrn_40_1', 'resnet20'), ('wrn_46_4', 'vgg13'),
                ('wrn_16_2', 'wrn_16_1'),
                # Supplementary Table 2: small teacher -> large student.
                ('resnet20', 'resnet56'), ('resnet20', 'wrn_40_1'), ('vgg13', 'wrn_46_4'),
                ('wrn_16_1', 'wrn_16_2')),
    'cifar100': (('resnet110', 'resnet32'),),                          # Tables 5, 6
    'imagenet2012': (('resnet34', 'resnet18'), ('resnet18', 'resnet34')),  # Table 2, Supp. Table 4
}
# Table 4 (CIFAR-100), member 0 ResNet-32. MobileNet: the CIFAR MobileNet of the IE-KD / DML code
# (`mobilenetv1_cifar`, stride-1 stem), not the ImageNet one.
DML_PEERS = ('resnet110', 'wrn_28_10', 'mobilenetv1_cifar', 'resnet32')
# Baseline columns of Table 1 / 2 and Supplementary Tables 1, 2, 4 under the IE recipe. The paper
# gives no baseline weights: RepDistiller's (configs/rd_cifar100.py; OD = `ofd`, FT and AB with
# their init stages), Tf-KD's official self-training constants (the teacher is the student
# architecture trained with the IE recipe).
BASELINES = ('kd', 'at', 'ft', 'od', 'tfkd_self', 'crd', 'fitnet', 'sp', 'cc', 'vid', 'rkd', 'pkt',
             'ab', 'nst')
TABLE4 = ('ie_dml', 'dml', 'independent')
_OPTIONS = dict(ratio=0.5, metric='', exp_metric='', inh=-1.0, exp=-1.0, rec='l1', ae_epochs=30.0,
                split='random', rec_weight=0.8)


def _parse(arg):
  a = common.parse_arg(arg, data='cifar10', method='ie_ft', teacher='resnet56', student='resnet20',
                       arch='', peer='', **_OPTIONS)
  common.choose('data', a.data, PAIRS)
  return a


def teacher_dir(data: str, arch: str) -> str:
  return f'runs/{data}/ie_kd/teacher_{arch}'


def recipe(data: str, arch: str):
  c = common.base(data, arch)
  if data == 'imagenet2012':
    return common.sgd(c, epochs=100, lr=0.1, batch=256, wd=1e-4, boundaries=(30, 60, 90),
                      nesterov=True)
  return common.sgd(c, epochs=160, lr=0.1, batch=128, wd=5e-4, boundaries=(80, 120), nesterov=True)


def teachers(data: str):
  return sorted({t for t, _ in PAIRS[data]} | {s for _, s in PAIRS[data]})


def _weights(a):
  default = 100.0 if a.data == 'imagenet2012' else 50.0
  return (a.inh if a.inh >= 0 else default), (a.exp if a.exp >= 0 else default)


def dml_recipe(arch: str):
  return common.sgd(common.base('cifar100', arch), epochs=200, lr=0.1, batch=64, wd=5e-4,
                    boundaries=(60, 120, 180), nesterov=True)


def ie_dml(a):
  """Table 4: IE-DML, DML (paper form: tau 1, KL not tau^2-scaled) and independent training."""
  common.choose('data (Table 4)', a.data, ('cifar100',))
  if a.method == 'independent':
    common.choose('student', a.student, ('resnet32',) + DML_PEERS)
    return dml_recipe(a.student)
  common.choose('student (member 0)', a.student, ('resnet32',))
  common.choose('peer', a.peer, DML_PEERS)
  c = dml_recipe(a.student)
  c.model.cohort = (a.student, a.peer)
  if a.method == 'dml':
    return common.with_terms(c, {'dml': dict(method='dml', weight=1.0, temperature=1.0,
                                             tau_squared=False, reduction='mean')}, 0.0)
  inh, exp = _weights(a)
  terms = {}
  for m, p in ((0, 1), (1, 0)):  # each term adds its member's CE; alternating updates (DML)
    terms[f'ie_m{m}'] = dict(method='ie_dml', member=m, peer=p, inherit_ratio=a.ratio,
                             rec_weight=a.rec_weight, inherit_weight=inh, explore_weight=exp,
                             rec_norm=a.rec, **({'metric': a.metric} if a.metric else {}))
  return common.with_terms(c, terms, 0.0)


def get_config(arg=None):
  a = _parse(arg)
  c = _config(a)
  # The official IE-KD code's CIFAR train loader (a PyTorch DataLoader, no drop_last) keeps
  # the last partial batch: 391 steps per epoch at batch 128, the last one masked (80 valid
  # rows). Every CIFAR cell (IE-KD, IE-DML, DML and the baselines) supports the mask.
  c.data.drop_remainder = a.data == 'imagenet2012'
  return c


def _config(a):
  if a.arch:
    common.choose('arch', a.arch, teachers(a.data))
    return recipe(a.data, a.arch)
  if a.method in TABLE4:
    return ie_dml(a)
  common.choose('method', a.method, tuple(VARIANTS) + BASELINES + TABLE4)
  common.choose('teacher,student', (a.teacher, a.student), PAIRS[a.data])
  if a.method in BASELINES:
    return baseline(a)
  c = common.with_teacher(recipe(a.data, a.student), a.teacher, teacher_dir(a.data, a.teacher))
  shared = dict(method='ie_kd', variant=VARIANTS[a.method], inherit_ratio=a.ratio,
                rec_norm=a.rec, split=a.split)
  inh, exp = _weights(a)
  main = dict(shared, inherit_weight=inh, explore_weight=exp)
  main.update({k: a[k] for k in ('metric', 'exp_metric') if a[k]})
  common.with_terms(c, {}, 1.0)
  c.stages = (
      common.stage('ae', a.ae_epochs, trainable=('^aux/ie/ae/',), ce_weight=0.0,
                   optim=dict(lr=0.1, schedule='constant', boundaries_epochs=()),
                   terms={'ie': dict(shared, phase='ae')}),
      common.stage('main', trainable=('^student/', '^aux/ie/(inh|exp)/'), ce_weight=1.0,
                   terms={'ie': main}),
  )
  return c


def baseline(a):
  rec = lambda arch: recipe(a.data, arch)
  if a.method == 'tfkd_self':
    c = common.with_teacher(rec(a.student), a.student, teacher_dir(a.data, a.student))
    return common.with_terms(c, *reversed(tfkd.METHODS['tfkd_self']))
  method = {'od': 'ofd'}.get(a.method, a.method)
  return rd_cifar100.distill(method, a.teacher, a.student, rec, teacher_dir(a.data, a.teacher))


def workdir(arg):
  a = _parse(arg)
  if a.arch:
    return teacher_dir(a.data, a.arch)
  if a.method in TABLE4:
    return f'runs/{a.data}/ie_kd/{a.method}_{a.student}' + (f'_{a.peer}' if a.peer else '')
  return f'runs/{a.data}/ie_kd/{a.method}_{a.teacher}_{a.student}'


def cells():
  out = []
  for d, pairs in PAIRS.items():
    out += [f'data={d},arch={t}' for t in teachers(d)]
    out += [f'data={d},method={m},teacher={t},student={s}' for m in VARIANTS for t, s in pairs]
    if d != 'cifar100':
      out += [f'data={d},method={m},teacher={t},student={s}' for m in BASELINES for t, s in pairs]
  out += [f'data=cifar100,method={m},student=resnet32,peer={p}' for m in ('ie_dml', 'dml')
          for p in DML_PEERS]
  return out + [f'data=cifar100,method=independent,student={x}' for x in DML_PEERS]


REJECTED = {}
