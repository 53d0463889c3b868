"""What distillation may ask a model: the `ModelSpec` every zoo module returns from `spec()`.

Synopsis:
  spec = models.create('resnet8', 10).spec()
  spec.feature_names          # ('stem', 'stage1', 'stage1_preact', ..., 'pooled')
  spec.num_blocks             # length of branch_scale (0: stochastic depth unsupported)
  spec.bn_before_relu         # {'stage1_preact': ('layer1_0', 'bn2'), ...}
  spec.params_up_to(2)        # ('^(conv1|bn1)/', '^layer1_\\d+/', '^layer2_\\d+/')
  with_prefix(spec.params_up_to(2), 'student/')   # the same regexes under 'student/'

Every family module (resnet_cifar, wrn, vgg, ...) builds its spec from its own
layout, so code outside `kdjax.models` never needs to know parameter names or
architecture-name patterns.
"""

from __future__ import annotations

import dataclasses
import types
from typing import Mapping, Sequence


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """Static description of one built model.

  Attributes:
    arch: the architecture name (as given to `models.create`).
    feature_names: keys of the features dict returned by `__call__` ('logits'
      itself not included; branch/member/ensemble logits are).
    num_stages: number of `stageK` features (K = 1..num_stages); stage 0 is the stem.
    num_blocks: residual blocks that accept `branch_scale` (its length); 0 = none,
      and `branch_scale` raises.
    bn_before_relu: 'stageK_preact' -> path (tuple of module names under `params`)
      of the BatchNorm whose output is exactly the map that ReLU sees (OFD's
      margins). Only stages that have such a BN are listed.
    has_forward_from: `model.apply(v, h, k, method='forward_from')` runs the rest
      of the network from a `stagek` map (SRRL at earlier layers).
    stage_params: stage_params[k] = regexes (anchored, over '/'-joined parameter
      paths without any 'student/' prefix) of the parameters first used by stage
      k (k = 0: the stem). Use `params_up_to`.
  """
  arch: str
  feature_names: tuple[str, ...]
  num_stages: int
  num_blocks: int
  bn_before_relu: Mapping[str, tuple[str, ...]]
  has_forward_from: bool
  stage_params: tuple[tuple[str, ...], ...] = ()

  def __post_init__(self):
    # A read-only mapping keeps the frozen dataclass honest.
    object.__setattr__(self, 'bn_before_relu', types.MappingProxyType(dict(self.bn_before_relu)))
    object.__setattr__(self, 'feature_names', tuple(self.feature_names))
    object.__setattr__(self, 'stage_params', tuple(tuple(s) for s in self.stage_params))

  def __hash__(self):  # the mapping field is not hashable itself; specs may be static jit args
    return hash((self.arch, self.feature_names, self.num_stages, self.num_blocks,
                 tuple(sorted(self.bn_before_relu.items())), self.has_forward_from,
                 self.stage_params))

  def params_up_to(self, stage: int) -> tuple[str, ...]:
    """Regexes matching exactly the parameters that compute feature stage<k> (0 = `stem`).

    Raises:
      ValueError: stage outside 0..num_stages, or no layout known for this model.
    """
    if not self.stage_params:
      raise ValueError(f'{self.arch}: no per-stage parameter layout; give the trainable '
                       'regexes explicitly.')
    if not 0 <= stage <= self.num_stages:
      raise ValueError(f'{self.arch}: stage must be in 0..{self.num_stages} (0 = stem), got {stage}.')
    return tuple(r for k in range(stage + 1) for r in self.stage_params[k])


def with_prefix(regexes: Sequence[str], prefix: str) -> tuple[str, ...]:
  """The anchored regexes of `params_up_to` under a collection prefix, e.g. 'student/'."""
  out = []
  for r in regexes:
    if not r.startswith('^'):
      raise ValueError(f'with_prefix: expected an anchored regex (starting with ^), got {r!r}.')
    out.append('^' + prefix + r[1:])
  return tuple(out)


def names_regex(names: Sequence[str]) -> str:
  """'^(a|b)/' : the parameters under any of the given top-level module names."""
  return '^(' + '|'.join(names) + ')/'


def standard_features(num_stages: int, extra: Sequence[str] = ('last_map', 'pooled')) -> tuple[str, ...]:
  """stem, stage1, stage1_preact, ..., stageN, stageN_preact, then `extra`."""
  names = ['stem']
  for k in range(1, num_stages + 1):
    names += [f'stage{k}', f'stage{k}_preact']
  return tuple(names) + tuple(extra)
