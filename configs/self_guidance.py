"""Self-Guidance (Peng et al. 2021): online self-distillation through stochastic depth, Tables 1-6.

  kdjax config list self_guidance
  kdjax train --config configs/self_guidance.py:data=cifar100,arch=resnet110 --workdir runs/cifar100/self_guidance/self_guidance_resnet110
  kdjax train --config configs/self_guidance.py:data=cifar100,arch=resnet110,method=baseline ...
  # Table 5 (lambda) and Table 6 (components)
  ...:data=cifar100,arch=resnet110,lam=0.5       ...,lam=0 (W/O online distillation)
  ...:data=cifar100,arch=resnet110,stop_teacher  (W/O backward full network)
  ...:data=cifar100,arch=resnet110,method=stochastic_depth
  # FER-2013 (Kaggle CSV) and RAF-DB basic (train/<class>/, test/<class>/), resized to 32x32
  ...:data=fer2013,arch=resnet32,path=/data/fer2013.csv

Table columns: data in {cifar10, cifar100, fer2013, raf} (Tables 1, 3); arch in {resnet32, resnet50,
resnet110}; ResNet-50 is the 6n+2 basic-block ResNet (n = 8, `resnet50_basic`), not the ImageNet
bottleneck net. Rows (method):
  self_guidance     CE(sub) + CE(full) + lam tau^2 KL(p_full || p_sub); stochastic depth with
                    final survival p_L = 0.5 (linear decay); lam 0.25, tau 3; ce_weight 0.
  baseline          plain CE (Table 1's ResNet rows).
  stochastic_depth  CE with stochastic depth only (Table 6).
  dml / one         Tables 2 and 4 on ResNet-32: DML with three ResNet-32 peers (1.4M parameters;
                    paper form: tau 1, KL not tau^2-scaled), ONE with 3 branches (1.18M).
  okddip            Table 4 (FER-2013, RAF): OKDDip on ResNet-32, 3 peers + group leader
                    (1.53M on 7 classes), T 3, ramp-up 80 epochs; the leader is evaluated.
Recipe: SGD Nesterov 0.9, wd 1e-4, batch 128, 300 epochs, lr 0.1 /10 at 150 and 225. The paper
reports top-1 error: `kdjax report --error`.
"""

from __future__ import annotations

from configs import common

DATA = {
    'cifar10': dict(name='cifar10'),
    'cifar100': dict(name='cifar100'),
    'fer2013': dict(name='fer2013', path='data/fer2013/fer2013.csv', image_size=32),
    'raf': dict(name='folder', path='data/raf_basic', image_size=32),
}
ARCHS = {'resnet32': 'resnet32', 'resnet50': 'resnet50_basic', 'resnet110': 'resnet110'}
METHODS = ('self_guidance', 'baseline', 'stochastic_depth', 'dml', 'one', 'okddip')
ONLINE_ARCH = 'resnet32'   # the DML / ONE / OKDDip rows of Tables 2 and 4
OKDDIP_DATA = ('fer2013', 'raf')   # Table 4 has OKDDip on these columns only


def _parse(arg):
  a = common.parse_arg(arg, data='cifar100', arch='resnet110', method='self_guidance', lam=0.25,
                       temperature=3.0, stop_teacher=False, final_prob=0.5, path='')
  common.choose('data', a.data, DATA)
  common.choose('arch', a.arch, ARCHS)
  common.choose('method', a.method, METHODS)
  if a.method in ('dml', 'one', 'okddip'):
    common.choose(f'arch ({a.method} row)', a.arch, (ONLINE_ARCH,))
  if a.method == 'okddip':
    common.choose('data (okddip row, Table 4)', a.data, OKDDIP_DATA)
  return a


def recipe(data: str, arch: str, path: str = ''):
  spec = DATA[data]
  c = common.sgd(common.base(spec['name'], arch), epochs=300, lr=0.1, batch=128, wd=1e-4,
                 boundaries=(150, 225), nesterov=True)
  c.data.update({k: v for k, v in spec.items() if k != 'name'})
  if path:
    c.data.path = path
  return c


def get_config(arg=None):
  a = _parse(arg)
  arch = ARCHS[a.arch]
  if a.method == 'one':
    return common.with_terms(recipe(a.data, f'one_{arch}', a.path), {'one': dict(
        method='one', weight=1.0, temperature=3.0, rampup_epochs=80.0)}, 0.0)
  if a.method == 'okddip':
    # Official OKDDip settings: 3 peers + leader, T 3, consistency ramp-up 80 epochs; the
    # leader's CE is the step's (ce_weight 1), the peers' CE is inside the term.
    return common.with_terms(recipe(a.data, f'okddip_{arch}', a.path), {'okddip': dict(
        method='okddip', temperature=3.0, alpha=1.0, rampup_epochs=80.0)}, 1.0)
  c = recipe(a.data, arch, a.path)
  if a.method == 'baseline':
    return c
  if a.method == 'stochastic_depth':
    return common.with_terms(c, {'stochastic_depth': dict(method='stochastic_depth',
                                                          final_survival_prob=a.final_prob)}, 1.0)
  if a.method == 'dml':
    c.model.cohort = (arch,) * 3
    return common.with_terms(c, {'dml': dict(method='dml', weight=1.0, temperature=1.0,
                                             tau_squared=False, reduction='mean')}, 0.0)
  return common.with_terms(c, {'self_guidance': dict(
      method='self_guidance', lam=a.lam, temperature=a.temperature, stop_teacher=a.stop_teacher,
      final_survival_prob=a.final_prob)}, 0.0)


def workdir(arg):
  a = _parse(arg)
  name = {'dml': 'dml_peers', 'one': 'one_ensemble', 'okddip': 'okddip_leader'}.get(a.method,
                                                                                  a.method)
  return f'runs/{a.data}/self_guidance/{name}_{a.arch}'


def cells():
  out = [f'data={d},arch={r},method={m}' for d in DATA for r in ARCHS
         for m in ('self_guidance', 'baseline', 'stochastic_depth')]
  out += [f'data={d},arch={ONLINE_ARCH},method={m}' for d in DATA for m in ('dml', 'one')]
  return out + [f'data={d},arch={ONLINE_ARCH},method=okddip' for d in OKDDIP_DATA]


REJECTED = {}
