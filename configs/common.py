"""Shared training recipes and the `key=value` argument parser of every config module.

Each recipe returns a locked `ConfigDict` from `kdjax.config.base_config()`;
the per-paper modules (`rd_cifar100`, `srrl`, ...) pick one and state what
differs. A module's `get_config(arg)` parses `arg` with `parse_arg`, like
big_vision's `configs/common.py`:

  parse_arg('method=crd,teacher=resnet32x4', method='kd', teacher='', student='')

Teacher checkpoints are read from the workdir the teacher's own cell writes
(`runs/...`, relative to the working directory) unless
`--config.teacher.checkpoint` says otherwise.
"""

from __future__ import annotations

from typing import Any, Iterable

from kdjax.config import ConfigDict, base_config

# RepDistiller uses lr 0.01 for these students.
RD_LOW_LR = ('mobilenetv2', 'shufflenetv1', 'shufflenetv2')
# Every parameter of the student except its classifier (RepDistiller `get_feat_modules`).
STUDENT_FEATURES = r'^student/(?!head/)'


def parse_arg(arg: str | None, **spec: Any) -> ConfigDict:
  """'a=1,flag,b=x' -> ConfigDict(a=1, flag=True, b='x'); types follow `spec`'s defaults.

  A key without '=' is a boolean switch. Unknown keys fail with the valid ones.
  """
  out = ConfigDict(dict(spec))
  for item in (arg or '').split(','):
    item = item.strip()
    if not item:
      continue
    key, eq, text = item.partition('=')
    if key not in spec:
      raise ValueError(f'unknown config argument {key!r}; this config accepts: '
                       f'{", ".join(sorted(spec))}.')
    default = spec[key]
    if not eq or isinstance(default, bool):
      value: Any = (not eq) or text.lower() in ('1', 'true', 'yes')
    elif isinstance(default, float):
      value = float(text)
    elif isinstance(default, int):
      value = int(text)
    else:
      value = text
    out[key] = value
  return out


def choose(what: str, value, choices: Iterable) -> None:
  """Fail with the valid choices when `value` is not one of them."""
  choices = list(choices)
  if value not in choices:
    raise ValueError(f'{what} {value!r} is not a cell of this table; valid: '
                     f'{", ".join(map(str, choices))}.')


def arg_string(**kw) -> str:
  """The cell argument for `kw` (bools become switches, False/'' are left out)."""
  parts = []
  for k, v in kw.items():
    if v is True:
      parts.append(k)
    elif v is not False and v != '' and v is not None:
      parts.append(f'{k}={v:g}' if isinstance(v, float) else f'{k}={v}')
  return ','.join(parts)


def with_terms(c: ConfigDict, terms: dict, ce_weight: float = 1.0) -> ConfigDict:
  c.distill.ce_weight = float(ce_weight)
  with c.distill.unlocked():
    c.distill.terms = ConfigDict({k: dict(v) for k, v in terms.items()})
  return c


def with_teacher(c: ConfigDict, arch: str, workdir: str) -> ConfigDict:
  c.teacher.arch = arch
  c.teacher.checkpoint = workdir
  return c


def stage(name: str, epochs: float | None = None, *, trainable=(), optim=None,
          ce_weight=None, terms=None) -> dict:
  """One entry of `config.stages`; epochs None = the run's top-level `epochs`."""
  st: dict[str, Any] = dict(name=name, trainable=tuple(trainable))
  if epochs is not None:
    st['epochs'] = epochs
  if optim:
    st['optim'] = dict(optim)
  distill: dict[str, Any] = {}
  if ce_weight is not None:
    distill['ce_weight'] = float(ce_weight)
  if terms is not None:
    distill['terms'] = {k: dict(v) for k, v in terms.items()}
  if distill:
    st['distill'] = distill
  return st


def sgd(c: ConfigDict, *, epochs, lr, batch, wd, boundaries, factor=0.1, nesterov=False,
        warmup=0.0) -> ConfigDict:
  """Step-decay SGD with momentum 0.9."""
  c.epochs = epochs
  c.optim.update(dict(lr=lr, batch_size=batch, weight_decay=wd, momentum=0.9, nesterov=nesterov,
                      schedule='piecewise', boundaries_epochs=tuple(boundaries),
                      decay_factor=factor, warmup_epochs=float(warmup)))
  return c


def base(dataset: str, arch: str) -> ConfigDict:
  c = base_config()
  c.data.name = dataset
  c.model.name = arch
  if dataset == 'imagenet2012':
    c.data.image_size = 224
    c.eval_batch_size = 500
  return c


# ---------------------------------------------------------------------------
# Recipes shared by several papers.

def digits(arch: str) -> ConfigDict:
  """The embedded 8x8 digits set: a minute or two on a 2-core CPU."""
  c = base('digits', arch)
  c.data.crop_padding = 1   # one-pixel jitter; digits are not mirror-symmetric
  c.data.flip = False
  c.epochs = 15
  c.optim.update(dict(batch_size=64, lr=0.05, weight_decay=5e-4, schedule='cosine',
                      warmup_epochs=1.0))
  c.eval_every_epochs = c.checkpoint_every_epochs = 5
  c.log_every_steps = 20
  c.eval_batch_size = 360
  return c


def rd_cifar100(arch: str) -> ConfigDict:
  """RepDistiller / CRD CIFAR-100: 240 epochs, batch 64, lr 0.05 (0.01 for light nets), /10 at 150/180/210.

  BatchNorm keeps PyTorch's unbiased running variance, as the reference (PyTorch) code does.
  """
  c = sgd(base('cifar100', arch), epochs=240, lr=0.01 if arch in RD_LOW_LR else 0.05, batch=64,
          wd=5e-4, boundaries=(150, 180, 210))
  with c.model.kwargs.unlocked():
    c.model.kwargs.bn_unbiased_running_var = True
  return c


def srrl_cifar10(arch: str) -> ConfigDict:
  """SRRL CIFAR-10: ResNets 350 epochs /10 at 150/250/320; WRNs 200 epochs /5 at 60/120/160."""
  c = base('cifar10', arch)
  if arch.startswith('wrn'):
    return sgd(c, epochs=200, lr=0.1, batch=128, wd=5e-4, boundaries=(60, 120, 160), factor=0.2)
  return sgd(c, epochs=350, lr=0.1, batch=128, wd=5e-4, boundaries=(150, 250, 320))


def srrl_cifar100(arch: str) -> ConfigDict:
  """SRRL CIFAR-100 (Tables 1, 6, 10): batch 128, lr 0.1 /10 at 100, 150; 200 epochs."""
  return sgd(base('cifar100', arch), epochs=200, lr=0.1, batch=128, wd=5e-4, boundaries=(100, 150))


def imagenet(arch: str) -> ConfigDict:
  """CRD / SRRL / WSLD ImageNet: 100 epochs, batch 256, lr 0.1 /10 every 30, wd 1e-4."""
  return sgd(base('imagenet2012', arch), epochs=100, lr=0.1, batch=256, wd=1e-4,
             boundaries=(30, 60, 90))


def tfkd_cifar100(arch: str) -> ConfigDict:
  """Tf-KD's CIFAR-100 recipe: 200 epochs, batch 128, lr 0.1, 1 warm-up epoch, x0.2 at 60/120/160."""
  return sgd(base('cifar100', arch), epochs=200, lr=0.1, batch=128, wd=5e-4,
             boundaries=(60, 120, 160), factor=0.2, warmup=1.0)


KD = {'kd': dict(method='kd', weight=0.9, temperature=4.0)}  # Hinton KD with 0.1 CE (RD)

# Pairs whose networks have different numbers of stages: the stages of equal resolution that
# stage-list methods (AT, VID, NST, OFD, AB) pair. The papers do not say which they used.
STAGE_MATCH = {
    frozenset(('wrn_46_4', 'vgg13')): {'wrn_46_4': (2, 3), 'vgg13': (1, 2)},          # 16, 8 px
    frozenset(('resnet34_cifar', 'wrn_16_2')): {'resnet34_cifar': (1, 2, 3), 'wrn_16_2': (1, 2, 3)},
    frozenset(('wrn_40_4', 'mobilenetv2_w1')): {'wrn_40_4': (2, 3), 'mobilenetv2_w1': (1, 2)},
}
_STAGE_LIST_METHODS = {'at': '', 'vid': '', 'nst': '', 'ofd': '_preact', 'ab': '_preact'}


def match_stages(terms: dict, teacher: str, student: str) -> dict:
  """`terms` with explicit student/teacher stage lists where STAGE_MATCH has the pair."""
  match = STAGE_MATCH.get(frozenset((teacher, student)))
  out = {}
  for k, spec in terms.items():
    spec = dict(spec)
    suffix = _STAGE_LIST_METHODS.get(spec.get('method', k))
    if match and suffix is not None:
      spec['student_features'] = tuple(f'stage{i}{suffix}' for i in match[student])
      spec['teacher_features'] = tuple(f'stage{i}{suffix}' for i in match[teacher])
    out[k] = spec
  return out

RECIPES = {'digits': digits, 'cifar100': rd_cifar100, 'cifar10': srrl_cifar10,
           'imagenet2012': imagenet}


def teacher(dataset: str, arch: str) -> ConfigDict:
  """`arch` from scratch with the dataset's default recipe (RECIPES)."""
  return RECIPES[dataset](arch)


def student(dataset: str, teacher_arch: str, student_arch: str, terms: dict,
            ce_weight: float = 1.0) -> ConfigDict:
  """A distillation run on the dataset's default recipe, teacher read from runs/<dataset>/teacher_<arch>."""
  c = with_teacher(RECIPES[dataset](student_arch), teacher_arch, f'runs/{dataset}/teacher_{teacher_arch}')
  return with_terms(c, terms, ce_weight)


def kd_terms(weight: float = 0.9, temperature: float = 4.0) -> dict:
  """RepDistiller's KD term (use with ce_weight 0.1)."""
  return {'kd': dict(method='kd', weight=weight, temperature=temperature)}
