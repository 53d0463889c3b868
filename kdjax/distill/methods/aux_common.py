"""Shared helpers of the methods with auxiliary modules (fitnet, ab, ft, vid, ofd, cc, crd).

Synopsis:
  names = feature_names(info, 'student', given, default)    validated feature keys
  aux = init_modules(rng, {'conn0': (module, example_x)})    {'params': ..., 'batch_stats': ...}
  y = apply_module(module, aux, 'conn0', x, ctx.train, new_stats)   BN stats into new_stats

A term's auxiliary variables are {'params': {sub: ...}, 'batch_stats': {sub: ...}}
with one entry per sub-module; `apply_module` runs BN on batch statistics when
`train` and records the updated statistics in `new_stats`, which the term
returns as {'batch_stats': new_stats}.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp

from kdjax.distill.api import (BuildInfo, FeatureArg, resolve_feature_pair,  # noqa: F401
                               resolve_features)



feature_names = resolve_features
feature_pair = resolve_feature_pair


def shape(info: BuildInfo, who: str, key: str) -> tuple[int, ...]:
  return tuple(info.feature(who, key).shape)


def require_maps(info: BuildInfo, method: str, s_keys, t_keys):
  for ks, kt in zip(s_keys, t_keys):
    s, t = shape(info, 'student', ks), shape(info, 'teacher', kt)
    if len(s) != 4 or len(t) != 4:
      raise ValueError(f'{method}: needs NHWC maps, but student {ks!r} has shape {s} and '
                       f'teacher {kt!r} has shape {t}.')


def require_poolable(method: str, ks, kt, s, t):
  (hs, ws), (ht, wt) = s[1:3], t[1:3]
  if not ((hs >= ht and ws >= wt) or (hs <= ht and ws <= wt)):
    raise ValueError(f'{method}: student {ks!r} ({hs}x{ws}) and teacher {kt!r} ({ht}x{wt}) '
                     'cannot be matched by pooling the larger map.')


def positive(method: str, **values):
  for k, v in values.items():
    if not (isinstance(v, (int, float)) and v > 0):
      raise ValueError(f'{method}: {k} must be a number > 0, got {v!r}.')


def init_modules(rng, modules: Mapping[str, tuple[Any, Any]]) -> dict:
  """Initialise named sub-modules on example inputs (train=False)."""
  params, stats = {}, {}
  for i, (name, (module, x)) in enumerate(modules.items()):
    v = module.init(jax.random.fold_in(rng, i), x, train=False)
    params[name] = v['params']
    if 'batch_stats' in v:
      stats[name] = v['batch_stats']
  out = {'params': params}
  if stats:
    out['batch_stats'] = stats
  return out


def apply_module(module, aux, name: str, x, train: bool, new_stats: dict, method=None):
  """Run sub-module `name`; with BN and train=True, store its new statistics."""
  variables = {'params': aux['params'][name]}
  stats = aux.get('batch_stats', {})
  kw = {} if method is None else {'method': method}
  if name in stats:
    variables['batch_stats'] = stats[name]
    if train:
      out, mut = module.apply(variables, x, train=True, mutable=['batch_stats'], **kw)
      new_stats[name] = mut['batch_stats']
      return out
  return module.apply(variables, x, train=train, **kw)


def state_out(aux, new_stats: dict) -> dict:
  """The non-param collections to return: updated BN statistics (others unchanged)."""
  if 'batch_stats' not in aux:
    return {}
  return {'batch_stats': {**aux['batch_stats'], **new_stats}}


def zeros_like_feature(info: BuildInfo, who: str, key: str, batch: int = 2):
  s = info.feature(who, key)
  return jnp.zeros((batch,) + tuple(s.shape[1:]), s.dtype)
