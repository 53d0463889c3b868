"""Recipes for the seed papers' own methods (IE-KD, Self-Guidance, SRRL, IPWD, PS-KD).

Synopsis:
  The files `configs/<dataset>/<method>_<teacher>_<student>.py` (teacher-free:
  `<method>_<arch>.py`) are one call each into this module. Every builder takes
  the file's config argument, a comma-separated list of switches and
  `key=value` pairs (`--config file.py:ratio=0.3,metric=l2`); the argument
  `teacher` returns the config that trains the teacher with the same seed
  recipe, into the workdir the student config reads:

      kdjax train --config configs/cifar10/ie_ft_resnet56_resnet20.py:teacher \
          --workdir runs/cifar10/ie_kd/teacher_resnet56
      kdjax train --config configs/cifar10/ie_ft_resnet56_resnet20.py \
          --workdir runs/cifar10/ie_ft_resnet56_resnet20

  Teachers of the CRD-protocol tables (SRRL Tables 11-12, IPWD) are the
  RepDistiller teachers of `kdjax.recipes` (`configs/cifar100/teacher_*.py`,
  `runs/cifar100/teacher_<arch>`). configs/SEED_TABLES.md maps every paper
  table to its files and arguments.
"""

from __future__ import annotations

from typing import Any

from kdjax import recipes
from kdjax.config import ConfigDict, base_config

# Seed 001's CIFAR "ResNet-50" is the 6n+2 basic-block ResNet with n = 8 (24
# blocks), not the torchvision bottleneck net that kdjax calls 'resnet50'.
# kdjax.models needs an alias for it (requested: 'resnet50_basic').
CIFAR_RESNET50 = 'resnet50_basic'

# File-name prefixes of the configs written from this module.
CONFIG_PREFIXES = ('ie_ft_', 'ie_at_', 'ie_od_', 'ie_dml_', 'self_guidance_', 'srrl_', 'ipwd_',
                   'pskd_')


def parse_arg(arg: str | None, allowed: dict[str, Any]) -> dict[str, Any]:
  """'a=1,flag,b=x' -> {'a': 1, 'flag': True, 'b': 'x'}, typed like `allowed`'s defaults."""
  out: dict[str, Any] = {}
  if not arg:
    return out
  for item in arg.split(','):
    item = item.strip()
    if not item:
      continue
    key, eq, text = item.partition('=')
    if key not in allowed:
      raise ValueError(f'unknown config argument {key!r}; this config accepts: '
                       f'{", ".join(sorted(allowed))}.')
    default = allowed[key]
    if not eq:
      value: Any = True
    elif isinstance(default, bool):
      value = text.lower() in ('1', 'true', 'yes')
    elif isinstance(default, float):
      value = float(text)
    elif isinstance(default, int):
      value = int(text)
    else:
      value = text
    out[key] = value
  return out


def _sgd(c: ConfigDict, *, epochs, lr, batch, wd, boundaries, factor=0.1, nesterov=False):
  c.epochs = epochs
  c.optim.lr = lr
  c.optim.batch_size = batch
  c.optim.weight_decay = wd
  c.optim.momentum = 0.9
  c.optim.nesterov = nesterov
  c.optim.schedule = 'piecewise'
  c.optim.boundaries_epochs = tuple(boundaries)
  c.optim.decay_factor = factor
  return c


def _base(dataset: str, arch: str) -> ConfigDict:
  c = base_config()
  c.data.name = dataset
  c.model.name = arch
  if dataset == 'imagenet2012':
    c.data.image_size = 224
    c.eval_batch_size = 500
  return c


def _with_teacher(c: ConfigDict, teacher: str, workdir: str) -> ConfigDict:
  c.teacher.arch = teacher
  c.teacher.checkpoint = workdir
  return c


def _terms(c: ConfigDict, terms: dict, ce_weight: float) -> ConfigDict:
  c.distill.ce_weight = ce_weight
  with c.distill.unlocked():
    c.distill.terms = ConfigDict({k: dict(v) for k, v in terms.items()})
  return c


def teacher_dir(dataset: str, seed: str, arch: str) -> str:
  """Workdir of a teacher trained with a seed paper's own recipe."""
  return f'runs/{dataset}/{seed}/teacher_{arch}'


# ----------------------------------------------------------------------------
# Seed 000: IE-KD

def ie_recipe(dataset: str, arch: str) -> ConfigDict:
  """IE-KD (official code): SGD Nesterov 0.9, wd 5e-4, batch 128, lr 0.1.

  CIFAR: 160 epochs, /10 at 80 and 120. ImageNet: 100 epochs, /10 every 30.
  """
  c = _base(dataset, arch)
  if dataset == 'imagenet2012':
    return _sgd(c, epochs=100, lr=0.1, batch=256, wd=1e-4, boundaries=(30, 60, 90),
                nesterov=True)
  return _sgd(c, epochs=160, lr=0.1, batch=128, wd=5e-4, boundaries=(80, 120), nesterov=True)


_IE_ARGS = dict(teacher=False, ratio=0.5, metric='', exp_metric='', inh=50.0, exp=50.0,
                rec='l1', ae_epochs=30.0, split='random')


def ie_kd(dataset: str, teacher: str, student: str, variant: str = 'ft',
          arg: str | None = None) -> ConfigDict:
  """Two-stage IE-KD: 30 AE epochs (lr 0.1 constant) on the frozen teacher, then the student.

  Arguments: teacher, ratio (Table 5's inheritance share), metric / exp_metric
  (Table 6a: l1, l2, cos, partial_l2), inh / exp (Table 6b weights; 100 on
  ImageNet by default), rec (l1 official, l2 paper), ae_epochs, split.
  """
  given = parse_arg(arg, _IE_ARGS)
  a = {**_IE_ARGS, **given}
  if a['teacher']:
    return ie_recipe(dataset, teacher)
  default_w = 100.0 if dataset == 'imagenet2012' else 50.0  # seed 000 Sec. 4.1
  weight, exp_w = given.get('inh', default_w), given.get('exp', default_w)
  c = _with_teacher(ie_recipe(dataset, student), teacher, teacher_dir(dataset, 'ie_kd', teacher))
  common = dict(method='ie_kd', variant=variant, inherit_ratio=a['ratio'], rec_norm=a['rec'],
                split=a['split'])
  main = dict(common, inherit_weight=weight, explore_weight=exp_w)
  if a['metric']:
    main['metric'] = a['metric']
  if a['exp_metric']:
    main['exp_metric'] = a['exp_metric']
  with c.unlocked():
    c.stages = (
        dict(name='ae', epochs=a['ae_epochs'], trainable=('^aux/ie/ae/',), student_train=False,
             optim=dict(lr=0.1, schedule='constant', boundaries_epochs=()),
             distill=dict(ce_weight=0.0, terms={'ie': dict(common, phase='ae')})),
        dict(name='main', epochs=c.epochs, trainable=('^student/', '^aux/ie/(inh|exp)/'),
             distill=dict(ce_weight=1.0, terms={'ie': main})),
    )
  return c


_IE_DML_ARGS = dict(ratio=0.5, metric='', rec_weight=0.8, inh=50.0, exp=50.0, rec='l1')


def ie_dml(arch0: str, arch1: str, arg: str | None = None, dataset: str = 'cifar100'
           ) -> ConfigDict:
  """IE-DML (seed 000 Table 4): a cohort of two nets from scratch, one IE term each, DML order.

  Recipe: the official DML CIFAR-100 config (200 epochs, batch 64, lr 0.1 /10
  at 60, 120, 180, Nesterov, wd 5e-4). Member 0 = arch0 (the main logits).
  """
  a = {**_IE_DML_ARGS, **parse_arg(arg, _IE_DML_ARGS)}
  c = _sgd(_base(dataset, arch0), epochs=200, lr=0.1, batch=64, wd=5e-4,
           boundaries=(60, 120, 180), nesterov=True)
  c.model.cohort = (arch0, arch1)
  terms = {}
  for m, p in ((0, 1), (1, 0)):
    t = dict(method='ie_dml', member=m, peer=p, inherit_ratio=a['ratio'],
             rec_weight=a['rec_weight'], inherit_weight=a['inh'], explore_weight=a['exp'],
             rec_norm=a['rec'])
    if a['metric']:
      t['metric'] = a['metric']
    terms[f'ie_m{m}'] = t
  _terms(c, terms, 0.0)  # each ie_dml term adds its member's CE
  c.distill.update_groups = ('^(student/member0|aux/ie_m0)/', '^(student/member1|aux/ie_m1)/')
  return c


# ----------------------------------------------------------------------------
# Seed 001: Self-Guidance

def self_guidance_recipe(dataset: str, arch: str) -> ConfigDict:
  """Seed 001: SGD Nesterov 0.9, wd 1e-4, batch 128, 300 epochs, lr 0.1 /10 at 150 and 225."""
  c = _base(dataset, arch)
  return _sgd(c, epochs=300, lr=0.1, batch=128, wd=1e-4, boundaries=(150, 225), nesterov=True)


_SG_ARGS = dict(baseline=False, stochdepth=False, lam=0.25, temperature=3.0,
                stop_teacher=False, final_prob=0.5, path='')


def self_guidance(dataset: str, arch: str, arg: str | None = None) -> ConfigDict:
  """Self-Guidance on one network (stochastic depth p_L = 0.5, lambda 0.25, tau 3).

  Arguments: baseline (plain CE, no stochastic depth: Table 1's ResNet rows),
  stochdepth (stochastic depth + CE only: Table 6), lam (Table 5; lam=0 is
  Table 6's "W/O online distillation"), stop_teacher (Table 6's "W/O backward
  full network"), final_prob, path (data.path for 'folder' / 'fer2013').
  """
  a = {**_SG_ARGS, **parse_arg(arg, _SG_ARGS)}
  if arch == 'resnet50':
    arch = CIFAR_RESNET50
  c = self_guidance_recipe(dataset, arch)
  if dataset in ('folder', 'fer2013'):
    c.data.image_size = 32
    c.data.path = a['path']
  if a['baseline']:
    return c
  c.model.stochastic_depth_final_prob = a['final_prob']
  if a['stochdepth']:
    return c
  return _terms(c, {'self_guidance': dict(method='self_guidance', lam=a['lam'],
                                          temperature=a['temperature'],
                                          stop_teacher=a['stop_teacher'])}, 0.0)


# ----------------------------------------------------------------------------
# Seed 003: SRRL

def srrl_cifar100_recipe(arch: str) -> ConfigDict:
  """Seed 003 CIFAR-100 (Tables 1, 6, 10): batch 128, lr 0.1 /10 at 100, 150; 200 epochs."""
  return _sgd(_base('cifar100', arch), epochs=200, lr=0.1, batch=128, wd=5e-4,
              boundaries=(100, 150))


def _srrl_recipe(protocol: str, dataset: str, arch: str) -> ConfigDict:
  if protocol == 'crd':
    return recipes.rd_cifar100(arch)
  if dataset == 'cifar10':
    return recipes.seed003_cifar10(arch)
  return srrl_cifar100_recipe(arch)


_SRRL_ARGS = dict(teacher=False, alpha=-1.0, beta=1.0, sr='mse', fm_only=False, sr_only=False,
                  kd=False, at=False, layers='')

# Seed 003 Table 1 names the WRN stem conv1 and its three groups conv2..conv4 (WRN paper);
# kdjax's stageK is group K, and conv4 is SRRL's default position ('last': after the final
# BN-ReLU, feeding the pooled vector).
_SRRL_CONV = {'conv2': 'stage1', 'conv3': 'stage2', 'conv4': 'last'}


def srrl_layers(text: str) -> tuple[str, ...]:
  """'conv2' / 'conv3' / 'conv2+3+4' (Table 1) or 'stage1+last' -> the `srrl` layers option."""
  out = []
  for part in text.split('+'):
    part = part.strip()
    if part.isdigit():
      part = f'conv{part}'
    if part in _SRRL_CONV:
      part = _SRRL_CONV[part]
    elif part != 'last' and not (part.startswith('stage') and part[5:].isdigit()):
      raise ValueError(f'srrl layers: unknown position {part!r}; use conv2 / conv3 / conv4 '
                       f"(joined with '+', e.g. conv2+3+4), stageK or last.")
    out.append(part)
  return tuple(out)


def srrl(dataset: str, teacher: str, student: str, arg: str | None = None, *,
         protocol: str = 'seed003', alpha: float = 1.0, student_kwargs: dict | None = None
         ) -> ConfigDict:
  """SRRL: CE + alpha L_FM + beta L_SR (official alpha = beta = 1, L_SR = MSE).

  protocol 'seed003' uses the paper's own recipes and teachers trained with
  them (`:teacher`); 'crd' the RepDistiller recipe and teachers (Tables
  11-12). Arguments: alpha, beta, sr (mse | ce | kl: Table 9), fm_only /
  sr_only (Table 1), kd / at (Table 10: add KD (weight 1, tau 4) or AT
  (weight 1000) to SRRL), layers (Table 1's last rows: conv2 / conv3 / conv2+3+4
  -> stage1 / stage2 / stage1+stage2+last, L_FM + L_SR at each, L_SR through
  AdaIN and the rest of the teacher; see `srrl_layers`).
  """
  a = {**_SRRL_ARGS, **parse_arg(arg, _SRRL_ARGS)}
  if a['teacher']:
    if protocol == 'crd':
      raise ValueError(f'CRD-protocol teachers are the RepDistiller ones: use '
                       f'configs/cifar100/teacher_{teacher}.py.')
    return _srrl_recipe(protocol, dataset, teacher)
  c = _srrl_recipe(protocol, dataset, student)
  if student_kwargs:
    with c.model.unlocked():
      c.model.kwargs = ConfigDict(dict(student_kwargs))
  workdir = (recipes.teacher_dir(dataset, teacher) if protocol == 'crd'
             else teacher_dir(dataset, 'srrl', teacher))
  _with_teacher(c, teacher, workdir)
  alpha = alpha if a['alpha'] < 0 else a['alpha']
  beta = a['beta']
  if a['fm_only']:
    beta = 0.0
  if a['sr_only']:
    alpha = 0.0
  terms = {'srrl': dict(method='srrl', alpha=alpha, beta=beta, sr_loss=a['sr'])}
  if a['layers']:
    terms['srrl']['layers'] = srrl_layers(a['layers'])
  if a['kd']:
    terms['kd'] = dict(method='kd', weight=1.0, temperature=4.0)
  if a['at']:
    terms['at'] = dict(method='at', weight=1000.0)
  return _terms(c, terms, 1.0)


# ----------------------------------------------------------------------------
# Seed 004: IPWD (two-stage, CRD protocol) and the one-stage PS-KD setting

_IPWD_ARGS = dict(star=False, estimator='prob_ratio', warmup=0.0, w_max=10.0, alpha=0.9,
                  temperature=4.0, dagger=False)


def ipwd(teacher: str, student: str, arg: str | None = None) -> ConfigDict:
  """Two-stage IPWD on CIFAR-100, CRD protocol: 0.1 CE + CE(extra head) + 0.9 w KD (tau 4).

  Arguments: star (IPWD*: the CE-aware output from a second student network,
  a cohort member trained with CE only), estimator (prob_ratio | ce_ratio),
  warmup (epochs before weighting), w_max, alpha, temperature, dagger (IPWD-dagger,
  appendix Table 4: the propensity's KD-aware output from an extra head trained with
  plain KD only).
  """
  a = {**_IPWD_ARGS, **parse_arg(arg, _IPWD_ARGS)}
  c = recipes.student('cifar100', teacher, student, {}, ce_weight=0.1)
  term = dict(method='ipwd', alpha=a['alpha'], temperature=a['temperature'],
              estimator=a['estimator'], warmup_epochs=a['warmup'], w_max=a['w_max'])
  if a['star']:
    c.model.cohort = (student, student)
    term.update(logits_feature='member0/logits', cls_feature='member1/logits')
  if a['dagger']:
    term['dagger'] = True
  return _terms(c, {'ipwd': term}, 0.1)


def pskd_recipe(arch: str, dataset: str = 'cifar100') -> ConfigDict:
  """PS-KD / IPWD one-stage: 300 epochs, Nesterov, lr 0.1 /10 at 150, 225, wd 5e-4, batch 128."""
  return _sgd(_base(dataset, arch), epochs=300, lr=0.1, batch=128, wd=5e-4,
              boundaries=(150, 225), nesterov=True)


_PSKD_ARGS = dict(baseline=False, alpha_T=0.8)


def pskd(arch: str, arg: str | None = None, dataset: str = 'cifar100') -> ConfigDict:
  """PS-KD (alpha_T 0.8): soft CE against the progressive target; `baseline` = plain CE."""
  a = {**_PSKD_ARGS, **parse_arg(arg, _PSKD_ARGS)}
  c = pskd_recipe(arch, dataset)
  if a['baseline']:
    return c
  return _terms(c, {'pskd': dict(method='pskd', alpha_T=a['alpha_T'])}, 0.0)


_IPWD_PSKD_ARGS = dict(alpha_T=0.8, estimator='prob_ratio', warmup=0.0, w_max=10.0)


def ipwd_pskd(arch: str, arg: str | None = None, dataset: str = 'cifar100') -> ConfigDict:
  """One-stage IPWD on PS-KD: teacher distribution = PS-KD's target; alpha 1, tau 1, no extra CE."""
  a = {**_IPWD_PSKD_ARGS, **parse_arg(arg, _IPWD_PSKD_ARGS)}
  c = pskd_recipe(arch, dataset)
  return _terms(c, {'ipwd': dict(method='ipwd', teacher_source='pskd', alpha=1.0,
                                 temperature=1.0, alpha_T=a['alpha_T'],
                                 estimator=a['estimator'], warmup_epochs=a['warmup'],
                                 w_max=a['w_max'])}, 0.0)
