"""RepDistiller / CRD CIFAR-100 benchmark (Tian et al. 2020), with DKD, WSLD, DIST, LSKD, KDSVD rows.

  kdjax config list rd_cifar100
  kdjax train --config configs/rd_cifar100.py:arch=resnet32x4 --workdir runs/cifar100/teacher_resnet32x4
  kdjax train --config configs/rd_cifar100.py:method=crd,teacher=resnet32x4,student=resnet8x4 \
      --workdir runs/cifar100/crd_resnet32x4_resnet8x4
  # a shortened two-stage run: 1 init epoch, then 2 epochs
  kdjax train --config configs/rd_cifar100.py:method=fitnet_2stage,teacher=resnet56,student=resnet20 \
      --workdir /tmp/fitnet --config.stages.0.epochs=1 --config.epochs=2

`arch=X` trains X from scratch (a teacher, or the table's student row).
Recipe (`common.rd_cifar100`): 240 epochs, batch 64, lr 0.05 (0.01 for MobileNetV2 and the
ShuffleNets), /10 at 150, 180, 210, wd 5e-4. The table below is RepDistiller's
scripts/run_cifar_distill.sh: (CE weight, terms).
"""

from __future__ import annotations

from configs import common

SAME_FAMILY = (('resnet56', 'resnet20'), ('wrn_40_2', 'wrn_16_2'), ('wrn_40_2', 'wrn_40_1'),
               ('resnet110', 'resnet20'), ('resnet110', 'resnet32'), ('resnet32x4', 'resnet8x4'),
               ('vgg13', 'vgg8'))
CROSS_FAMILY = (('vgg13', 'mobilenetv2'), ('resnet50_cifar', 'mobilenetv2'),
                ('resnet50_cifar', 'vgg8'), ('resnet32x4', 'shufflenetv1'),
                ('resnet32x4', 'shufflenetv2'), ('wrn_40_2', 'shufflenetv1'))
PAIRS = SAME_FAMILY + CROSS_FAMILY
ARCHS = tuple(sorted({a for p in PAIRS for a in p}))

# One-stage rows: method -> (CE weight, terms).
ONE_STAGE = {
    'kd': (0.1, {'kd': dict(method='kd', weight=0.9, temperature=4.0)}),
    'fitnet': (1.0, {'fitnet': dict(method='fitnet', weight=100.0)}),
    'at': (1.0, {'at': dict(method='at', weight=1000.0)}),
    'sp': (1.0, {'sp': dict(method='sp', weight=3000.0)}),
    'cc': (1.0, {'cc': dict(method='cc', weight=0.02)}),
    'vid': (1.0, {'vid': dict(method='vid', weight=1.0)}),
    'rkd': (1.0, {'rkd': dict(method='rkd', weight=1.0)}),   # 25 distance + 50 angle
    'pkt': (1.0, {'pkt': dict(method='pkt', weight=30000.0)}),
    'nst': (1.0, {'nst': dict(method='nst', weight=50.0)}),
    'crd': (1.0, {'crd': dict(method='crd', weight=0.8)}),
    'crd_kd': (1.0, {'crd': dict(method='crd', weight=0.8),
                     'kd': dict(method='kd', weight=1.0, temperature=4.0)}),
    'ofd': (1.0, {'ofd': dict(method='ofd', weight=1e-3)}),  # official OFD weight
    # Later logit methods on the same protocol (mdistiller; IPWD's appendix).
    # DKD: alpha 1, beta per pair (DKD_BETA, else 8), tau 4, 20-epoch warm-up.
    'dkd': (1.0, {'dkd': dict(method='dkd', weight=1.0, alpha=1.0, beta=8.0, temperature=4.0,
                              warmup_epochs=20.0)}),
    # WSLD's CIFAR constants are unpublished: tau 4 as RD's KD, weight 2.5 as its ImageNet code.
    'wsld': (1.0, {'wsld': dict(method='wsld', weight=2.5, temperature=4.0)}),
    # DIST (Huang et al. 2022), its CIFAR-100 settings: beta = gamma = 2, tau 4, CE 1.
    'dist': (1.0, {'dist': dict(method='dist', weight=1.0, beta=2.0, gamma=2.0,
                                temperature=4.0)}),
    # Logit standardization (Sun et al. 2024, mdistiller-based code): CE 0.1, KD 9, base tau
    # per pair (LSKD_T, else 2); LSKD_WEIGHT overrides the KD weight.
    'lskd': (0.1, {'lskd': dict(method='lskd', weight=9.0, temperature=2.0)}),
    # KDSVD (Lee et al. 2018), RepDistiller's `--distill kdsvd`: weight 1, k 1, CE 1; defined
    # only where each stage pair has equal channels (KDSVD_NA are rejected at setup).
    'kdsvd': (1.0, {'kdsvd': dict(method='kdsvd', weight=1.0, k=1)}),
}
LSKD_T = {('vgg13', 'vgg8'): 3.0, ('vgg13', 'mobilenetv2'): 3.0,
          ('resnet50_cifar', 'mobilenetv2'): 3.0}
LSKD_WEIGHT = {('resnet50_cifar', 'mobilenetv2'): 1.0}
DKD_BETA = {('resnet56', 'resnet20'): 2.0, ('resnet110', 'resnet32'): 2.0, ('vgg13', 'vgg8'): 6.0,
            ('wrn_40_2', 'wrn_16_2'): 6.0, ('wrn_40_2', 'wrn_40_1'): 6.0}

# Two-stage rows: an init stage, then `main` for the recipe's epochs.
#   ab     'ab_init' 30 epochs, constant recipe lr, AB (+connector) on the student without its
#          classifier, no CE; then CE only.
#   ft     'ft_paraphraser' 30 epochs, constant lr 0.01 for ResNet/WRN students (else the
#          recipe lr), only the paraphraser trains (student in eval mode); then CE + 200 FT.
#   fsp    'fsp_init' 30 epochs, constant lr 0.05, FSP on the stem + stages, student without
#          classifier; then CE only. Needs equal channel counts (FSP_NA: RD's "N/A" cells).
#   fitnet_2stage / fsp_2stage   "KD beyond model compression"'s two-stage FitNet / FSP: a
#          100-epoch init stage (lr 0.001, /10 at 60, 80; hint at stage 2 on the student up to
#          stage 2 + regressor, or FSP with pair weights [1, 3, 1]), then 0.1 CE + 0.9 KD.
#   sskd   SSKD (Xu et al. 2020, official student.py / command.sh): 'sskd_teacher_ss' 60 epochs
#          training only the teacher's self-supervision head (lr 0.05, /10 at 30, 45), then
#          0.1 CE + SSKD (0.9 KD + 2.7 rotated KD + 10 SS, the term's defaults) on the student
#          and its SS head.
INIT_EPOCHS = 30
TWO_STAGE = ('ab', 'ft', 'fsp', 'fitnet_2stage', 'fsp_2stage', 'sskd')
METHODS = tuple(ONE_STAGE) + TWO_STAGE
FSP_NA = (('vgg13', 'mobilenetv2'), ('resnet50_cifar', 'mobilenetv2'), ('resnet50_cifar', 'vgg8'),
          ('resnet32x4', 'shufflenetv1'), ('resnet32x4', 'shufflenetv2'),
          ('wrn_40_2', 'shufflenetv1'), ('wrn_40_2', 'wrn_40_1'))
KDSVD_NA = (('wrn_40_2', 'wrn_40_1'),) + CROSS_FAMILY
# RD helper/pretrain.py: FT's init lr is 0.01 for these students.
_FT_LOW_LR = ('resnet8', 'resnet14', 'resnet20', 'resnet32', 'resnet44', 'resnet56', 'resnet110',
              'resnet8x4', 'resnet32x4', 'wrn_16_1', 'wrn_16_2', 'wrn_40_1', 'wrn_40_2')
SLOW_LR_INIT = dict(schedule='piecewise', lr=0.001, boundaries_epochs=(60, 80), decay_factor=0.1,
                    warmup_epochs=0.0)


def teacher_dir(arch: str) -> str:
  return f'runs/cifar100/teacher_{arch}'


def init_stage(method: str, teacher: str, student: str, lr: float) -> dict:
  """The first stage of a two-stage row (also used by `kd_beyond_compression`)."""
  const = dict(schedule='constant', warmup_epochs=0.0)
  if method == 'ab':
    return common.stage('ab_init', INIT_EPOCHS, trainable=(common.STUDENT_FEATURES, '^aux/ab/'),
                        optim=dict(const, lr=lr), ce_weight=0.0,
                        terms={'ab': dict(method='ab', weight=1.0)})
  if method == 'ft':
    return common.stage('ft_paraphraser', INIT_EPOCHS, trainable=('^aux/ft/paraphraser/',),
                        optim=dict(const, lr=0.01 if student in _FT_LOW_LR else lr), ce_weight=0.0,
                        terms={'ft': dict(method='ft', phase='paraphraser', variant='rd',
                                          weight=1.0)})
  if method == 'fsp':
    return common.stage('fsp_init', INIT_EPOCHS, trainable=(common.STUDENT_FEATURES,),
                        optim=dict(const, lr=0.05), ce_weight=0.0,
                        terms={'fsp': dict(method='fsp', weight=1.0)})
  if method == 'fitnet_2stage':
    from kdjax.distill.methods.fitnet import hint_trainable
    return common.stage('hint', 100, trainable=tuple(hint_trainable(student, 2)) + ('^aux/fitnet/',),
                        optim=SLOW_LR_INIT, ce_weight=0.0,
                        terms={'fitnet': dict(method='fitnet', weight=1.0, hint_layer=2)})
  if method == 'fsp_2stage':
    return common.stage('fsp_init', 100, trainable=(common.STUDENT_FEATURES,), optim=SLOW_LR_INIT,
                        ce_weight=0.0, terms={'fsp': dict(method='fsp', weight=1.0,
                                                          pair_weights=(1.0, 3.0, 1.0))})
  if method == 'sskd':
    return common.stage('sskd_teacher_ss', 60, trainable=('^aux/sskd/teacher_head/',),
                        optim=dict(schedule='piecewise', lr=0.05, boundaries_epochs=(30, 45),
                                   decay_factor=0.1, warmup_epochs=0.0),
                        ce_weight=0.0, terms={'sskd': dict(method='sskd', phase='teacher_ss')})
  raise ValueError(f'no init stage for {method!r}; two-stage methods: {TWO_STAGE}.')


def distill(method: str, teacher: str, student: str, recipe=common.rd_cifar100,
            teacher_workdir: str = ''):
  """RD's `method` for teacher -> student on `recipe` (any architectures; other papers'
  baseline columns use it with their own recipe and teachers)."""
  common.choose('method', method, METHODS)
  c = common.with_teacher(recipe(student), teacher, teacher_workdir or teacher_dir(teacher))
  if method in ONE_STAGE:
    ce, terms = ONE_STAGE[method]
    if method == 'dkd':
      terms = {'dkd': dict(terms['dkd'], beta=DKD_BETA.get((teacher, student), 8.0))}
    if method == 'lskd':
      pair = (teacher, student)
      terms = {'lskd': dict(terms['lskd'], temperature=LSKD_T.get(pair, 2.0),
                            weight=LSKD_WEIGHT.get(pair, 9.0))}
    return common.with_terms(c, common.match_stages(terms, teacher, student), ce)
  if method.endswith('_2stage'):
    common.with_terms(c, common.KD, 0.1)
    main = common.stage('main')
  elif method == 'ft':
    common.with_terms(c, {'ft': dict(method='ft', weight=200.0, variant='rd')}, 1.0)
    main = common.stage('main', trainable=('^student/', '^aux/ft/translator/'))
  elif method == 'sskd':  # the teacher's SS head stays as stage 1 left it (no decay either)
    common.with_terms(c, {'sskd': dict(method='sskd')}, 0.1)
    main = common.stage('main', trainable=('^student/', '^aux/sskd/student_head/'))
  else:
    common.with_terms(c, {}, 1.0)
    main = common.stage('main')
  init = init_stage(method, teacher, student, c.optim.lr)
  init['distill']['terms'] = common.match_stages(init['distill']['terms'], teacher, student)
  c.stages = (init, main)
  return c


def get_config(arg=None):
  a = common.parse_arg(arg, method='kd', teacher='resnet32x4', student='resnet8x4', arch='')
  if a.arch:
    common.choose('arch', a.arch, ARCHS)
    c = common.rd_cifar100(a.arch)
  else:
    common.choose('method', a.method, METHODS)
    common.choose('teacher,student', (a.teacher, a.student), PAIRS)
    c = distill(a.method, a.teacher, a.student)
  # RepDistiller's train loader (a PyTorch DataLoader, drop_last=False) keeps the last
  # partial batch: 782 steps per epoch at batch 64, the last one masked (16 valid rows).
  c.data.drop_remainder = False
  return c


def workdir(arg):
  a = common.parse_arg(arg, method='kd', teacher='resnet32x4', student='resnet8x4', arch='')
  if a.arch:
    return teacher_dir(a.arch)
  return f'runs/cifar100/{a.method}_{a.teacher}_{a.student}'


def cells():
  return ([f'arch={a}' for a in ARCHS] +
          [f'method={m},teacher={t},student={s}' for m in METHODS for t, s in PAIRS])


# Cells that fail when the run is set up, with the reason (RD's "N/A").
REJECTED = {f'method={m},teacher={t},student={s}': 'channel counts must match'
            for m in ('fsp', 'fsp_2stage') for t, s in FSP_NA}
REJECTED.update({f'method=kdsvd,teacher={t},student={s}': 'equal channel counts'
                 for t, s in KDSVD_NA})
# The 2-stage FSP's pair weights [1, 3, 1] are defined for 3-stage ResNets / WRNs; VGG has 4.
REJECTED['method=fsp_2stage,teacher=vgg13,student=vgg8'] = '3 pair_weights for 4 pairs'

