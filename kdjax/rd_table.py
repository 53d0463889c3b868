"""The RepDistiller / CRD CIFAR-100 benchmark table as kdjax configs.

Synopsis:
  from kdjax import rd_table
  cfg = rd_table.config('crd', 'resnet32x4', 'resnet8x4')     # a locked ConfigDict
  rd_table.PAIRS, rd_table.METHODS, rd_table.EXTRA_METHODS

Every config starts from `recipes.student('cifar100', teacher, student, ...)`
(RD recipe: 240 epochs, batch 64, lr 0.05 or 0.01 for MobileNetV2/ShuffleNets,
x0.1 at 150/180/210, wd 5e-4) and sets RD's loss weights
(scripts/run_cifar_distill.sh; METHODS.md sections 1-3, 6, 7):

  method   ce    terms
  kd       0.1   kd 0.9 (tau 4)
  fitnet   1     fitnet 100 (stage2, ConvReg)
  at       1     at 1000          sp    1  sp 3000        cc   1  cc 0.02
  vid      1     vid 1            rkd   1  rkd 1 (25 D + 50 A)
  pkt      1     pkt 30000        nst   1  nst 50         crd  1  crd 0.8
  crd_kd   1     crd 0.8 + kd 1.0
  ofd      1     ofd 1e-3 (official OFD weight; not in RD's table)
  ab       two stages: 'ab_init' 30 epochs, constant recipe lr, CE off, AB (+connector)
           training the student without its classifier; then 'main' with CE only.
  ft       two stages: 'ft_paraphraser' 30 epochs, constant lr 0.01 for resnet/wrn
           students (else the recipe lr), MSE reconstruction, only aux/ft/paraphraser
           trained; then 'main': CE + 200 FT (RD variant), student + translator.
  fsp      two stages: 'fsp_init' 30 epochs, constant lr 0.05, FSP on stem + stages
           (RD feat[:-1]) training the student without its classifier; then CE only.
           Needs equal channel counts: e.g. wrn_40_2 -> wrn_40_1 is rejected when the
           run is set up (ValueError from the fsp builder).

Comparison rows on the same protocol (COMPARISON_METHODS): dkd (CE 1 + DKD,
beta per pair as mdistiller), wsld (CE 1 + 2.5 WSLD, tau 4; CIFAR constants
unpublished).

Seed-002 two-stage variants (EXTRA_METHODS, no files in configs/): stage 1 of
100 epochs, lr 0.001 x0.1 at 60/80, then Hinton KD (0.1 CE + 0.9 KD, tau 4) on
the RD recipe:
  fitnet_2stage   stage 1 hint at stage2 (weight 1) training the student up to
                  stage2 + the regressor (`fitnet.hint_trainable`).
  fsp_2stage      stage 1 FSP with pair weights [1, 3, 1], student without classifier.
"""

from __future__ import annotations

from kdjax import recipes
from kdjax.config import ConfigDict
from kdjax.distill.methods.fitnet import hint_trainable

SAME_FAMILY = (('resnet56', 'resnet20'), ('wrn_40_2', 'wrn_16_2'), ('wrn_40_2', 'wrn_40_1'),
               ('resnet110', 'resnet20'), ('resnet110', 'resnet32'), ('resnet32x4', 'resnet8x4'),
               ('vgg13', 'vgg8'))
CROSS_FAMILY = (('vgg13', 'mobilenetv2'), ('resnet50_cifar', 'mobilenetv2'),
                ('resnet50_cifar', 'vgg8'), ('resnet32x4', 'shufflenetv1'),
                ('resnet32x4', 'shufflenetv2'), ('wrn_40_2', 'shufflenetv1'))
PAIRS = SAME_FAMILY + CROSS_FAMILY

METHODS = ('kd', 'fitnet', 'at', 'sp', 'cc', 'vid', 'rkd', 'pkt', 'ab', 'ft', 'fsp', 'nst', 'crd',
           'crd_kd', 'ofd')
EXTRA_METHODS = ('fitnet_2stage', 'fsp_2stage')
# Later logit methods compared on the same protocol (IPWD's appendix, mdistiller).
COMPARISON_METHODS = ('dkd', 'wsld')

# mdistiller's DKD beta per pair (METHODS.md section 1); 8 elsewhere.
DKD_BETA = {('resnet56', 'resnet20'): 2.0, ('resnet110', 'resnet32'): 2.0, ('vgg13', 'vgg8'): 6.0,
            ('wrn_40_2', 'wrn_16_2'): 6.0, ('wrn_40_2', 'wrn_40_1'): 6.0}

INIT_EPOCHS = 30
# Every parameter of the student except its classifier (RD `get_feat_modules`).
STUDENT_FEATURES = r'^student/(?!head/)'

_SINGLE = {
    'kd': (0.1, {'kd': dict(method='kd', weight=0.9, temperature=4.0)}),
    'fitnet': (1.0, {'fitnet': dict(method='fitnet', weight=100.0)}),
    'at': (1.0, {'at': dict(method='at', weight=1000.0)}),
    'sp': (1.0, {'sp': dict(method='sp', weight=3000.0)}),
    'cc': (1.0, {'cc': dict(method='cc', weight=0.02)}),
    'vid': (1.0, {'vid': dict(method='vid', weight=1.0)}),
    'rkd': (1.0, {'rkd': dict(method='rkd', weight=1.0)}),
    'pkt': (1.0, {'pkt': dict(method='pkt', weight=30000.0)}),
    'nst': (1.0, {'nst': dict(method='nst', weight=50.0)}),
    'crd': (1.0, {'crd': dict(method='crd', weight=0.8)}),
    'crd_kd': (1.0, {'crd': dict(method='crd', weight=0.8),
                     'kd': dict(method='kd', weight=1.0, temperature=4.0)}),
    'ofd': (1.0, {'ofd': dict(method='ofd', weight=1e-3)}),
}

# RD helper/pretrain.py: FT's init lr is 0.01 for these students.
_FT_LOW_LR = ('resnet8', 'resnet14', 'resnet20', 'resnet32', 'resnet44', 'resnet56', 'resnet110',
              'resnet8x4', 'resnet32x4', 'wrn_16_1', 'wrn_16_2', 'wrn_40_1', 'wrn_40_2')


def _stage(name, epochs, *, trainable=(), optim=None, ce_weight=None, terms=None,
           student_train=True) -> dict:
  st = dict(name=name, epochs=epochs, trainable=tuple(trainable), student_train=student_train)
  if optim:
    st['optim'] = dict(optim)
  distill = {}
  if ce_weight is not None:
    distill['ce_weight'] = float(ce_weight)
  if terms is not None:
    distill['terms'] = {k: dict(v) for k, v in terms.items()}
  if distill:
    st['distill'] = distill
  return st


def config(method: str, teacher: str, student: str, dataset: str = 'cifar100') -> ConfigDict:
  """RD's config of `method` for the pair teacher -> student (any architectures).

  Raises ValueError for an unknown method. Pairs a method cannot handle (e.g.
  FSP across channel counts) are rejected when the run is set up, by the
  method's builder.
  """
  if method in _SINGLE:
    ce, terms = _SINGLE[method]
    return recipes.student(dataset, teacher, student, terms, ce_weight=ce)
  if method == 'dkd':  # CE 1 + DKD (alpha 1, beta per pair, tau 4, 20-epoch warm-up)
    beta = DKD_BETA.get((teacher, student), 8.0)
    return recipes.student(dataset, teacher, student, {'dkd': dict(
        method='dkd', weight=1.0, alpha=1.0, beta=beta, temperature=4.0, warmup_epochs=20.0)})
  if method == 'wsld':
    # WSLD's CIFAR-100 constants are not published (METHODS.md section 8): tau 4
    # as RD's KD, alpha 2.5 as the official ImageNet code; CE weight 1.
    return recipes.student(dataset, teacher, student,
                           {'wsld': dict(method='wsld', weight=2.5, temperature=4.0)})
  if method not in ('ab', 'ft', 'fsp') + EXTRA_METHODS:
    raise ValueError(f'unknown RD-table method {method!r}; known: '
                     f'{sorted(METHODS + EXTRA_METHODS + COMPARISON_METHODS)}')
  main_terms = {}
  main_ce = 1.0
  if method in EXTRA_METHODS:
    main_terms, main_ce = {'kd': dict(method='kd', weight=0.9, temperature=4.0)}, 0.1
  elif method == 'ft':
    main_terms = {'ft': dict(method='ft', weight=200.0, variant='rd')}
  c = recipes.student(dataset, teacher, student, main_terms, ce_weight=main_ce)
  lr = c.optim.lr
  main = _stage('main', c.epochs)
  if method == 'ab':
    init = _stage('ab_init', INIT_EPOCHS, trainable=(STUDENT_FEATURES, '^aux/ab/'),
                  optim=dict(schedule='constant', lr=lr, warmup_epochs=0.0), ce_weight=0.0,
                  terms={'ab': dict(method='ab', weight=1.0)})
  elif method == 'ft':
    init = _stage('ft_paraphraser', INIT_EPOCHS, trainable=('^aux/ft/paraphraser/',),
                  optim=dict(schedule='constant', lr=0.01 if student in _FT_LOW_LR else lr,
                             warmup_epochs=0.0),
                  ce_weight=0.0, terms={'ft': dict(method='ft', phase='paraphraser',
                                                   variant='rd', weight=1.0)},
                  student_train=False)  # RD keeps the student in eval mode here
    main = _stage('main', c.epochs, trainable=('^student/', '^aux/ft/translator/'))
  elif method == 'fsp':
    init = _stage('fsp_init', INIT_EPOCHS, trainable=(STUDENT_FEATURES,),
                  optim=dict(schedule='constant', lr=0.05, warmup_epochs=0.0), ce_weight=0.0,
                  terms={'fsp': dict(method='fsp', weight=1.0)})
  else:  # seed 002
    seed_optim = dict(schedule='piecewise', lr=0.001, boundaries_epochs=(60, 80),
                      decay_factor=0.1, warmup_epochs=0.0)
    if method == 'fitnet_2stage':
      init = _stage('hint', 100, trainable=tuple(hint_trainable(student, 2)) + ('^aux/fitnet/',),
                    optim=seed_optim, ce_weight=0.0,
                    terms={'fitnet': dict(method='fitnet', weight=1.0, hint_layer=2)})
    else:
      init = _stage('fsp_init', 100, trainable=(STUDENT_FEATURES,), optim=seed_optim,
                    ce_weight=0.0,
                    terms={'fsp': dict(method='fsp', weight=1.0, pair_weights=(1.0, 3.0, 1.0))})
  c.stages = (init, main)
  return c
