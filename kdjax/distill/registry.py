"""The method registry: builders registered by name, and config entries resolved into `Term`s.

Synopsis:
  @register_method('kd', family='logits', paper='Hinton et al. 2015')
  def build_kd(info: BuildInfo, *, weight=0.9, temperature=4.0) -> Term: ...

  check_spec({'method': 'kd', 'temperature': 4.0})   # names only, before any data loads
  terms = resolve_terms(specs, info)                  # builders see the feature shapes
  check_masking(terms)                                # data.drop_remainder=False

`kdjax.distill.api` re-exports every public name here, so methods import one module.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

if TYPE_CHECKING:
  from kdjax.distill.api import BuildInfo, Term


def _did_you_mean(key: str, options) -> str:
  close = difflib.get_close_matches(key, list(options), n=1)
  return f' (did you mean {close[0]!r}?)' if close else ''


@dataclasses.dataclass(frozen=True)
class MethodInfo:
  name: str
  builder: Callable[..., Term | Sequence[Term]]
  family: str
  paper: str
  summary: str


_METHODS: dict[str, MethodInfo] = {}


def register_method(name: str, *, family: str, paper: str, summary: str = ''):
  """Decorator registering `builder(info: BuildInfo, **hparams) -> Term(s)`.

  The builder's keyword arguments (with defaults) are the method's
  hyper-parameters; config entries are checked against them.
  """
  def deco(builder):
    if name in _METHODS:
      raise ValueError(f'method {name!r} is already registered '
                       f'(by {_METHODS[name].builder.__module__}).')
    _METHODS[name] = MethodInfo(name, builder, family, paper,
                                summary or (builder.__doc__ or '').strip().split('\n')[0])
    return builder
  return deco


def registered_methods() -> dict[str, MethodInfo]:
  return dict(_METHODS)


def get_method(name: str) -> MethodInfo:
  if name not in _METHODS:
    raise ValueError(f'unknown distillation method {name!r}{_did_you_mean(name, _METHODS)}; '
                     f'known: {sorted(_METHODS)}')
  return _METHODS[name]


def hyperparameters(name: str) -> dict[str, Any]:
  """The keyword arguments a method accepts, with their defaults."""
  sig = inspect.signature(get_method(name).builder)
  return {k: p.default for k, p in list(sig.parameters.items())[1:]
          if p.kind == p.KEYWORD_ONLY}


def check_spec(spec: Mapping[str, Any]) -> None:
  """Shape-free checks of one config entry: the method exists and takes these keys.

  Runs before any data or teacher is loaded, so a typo costs milliseconds.
  """
  spec = dict(spec)
  if 'method' not in spec:
    raise ValueError(f'distillation term {spec} has no "method" key.')
  method = spec.pop('method')
  spec.pop('name', None)
  get_method(method)
  allowed = hyperparameters(method)
  for key in spec:
    if key not in allowed:
      raise ValueError(f'method {method!r} has no hyper-parameter {key!r}'
                       f'{_did_you_mean(key, allowed)}; it accepts: {sorted(allowed)}')


def build_term(spec: Mapping[str, Any], info: BuildInfo) -> list[Term]:
  """Resolve one config entry (a mapping with 'method' and hyper-parameters)."""
  check_spec(spec)
  spec = dict(spec)
  method = spec.pop('method')
  name = spec.pop('name', None)
  built = get_method(method).builder(info, **spec)
  from kdjax.distill.api import Term  # api imports this module at load time
  terms = [built] if isinstance(built, Term) else list(built)
  if name is not None:
    if len(terms) != 1:
      raise ValueError(f'"name" given for method {method!r}, which builds {len(terms)} terms.')
    terms = [dataclasses.replace(terms[0], name=name)]
  return [dataclasses.replace(t, needs=t.needs.for_term(t.name)) for t in terms]


def resolve_terms(specs: Sequence[Mapping[str, Any]], info: BuildInfo) -> tuple[Term, ...]:
  """Resolve every term of a config; names must be unique."""
  terms: list[Term] = []
  for spec in specs:
    terms.extend(build_term(spec, info))
  seen = set()
  for t in terms:
    if t.name in seen:
      raise ValueError(f'two distillation terms are named {t.name!r}; give one a "name".')
    seen.add(t.name)
    if t.needs_teacher and info.teacher_shapes is None:
      raise ValueError(f'term {t.name!r} ({t.method}) needs a teacher; set '
                       f'config.teacher.checkpoint to a trained teacher workdir.')
  return tuple(terms)


def check_masking(terms: Sequence[Term]) -> None:
  """Every term can run on a masked batch (`data.drop_remainder=False`), else a clear error."""
  bad = [t for t in terms if not t.supports_mask]
  if bad:
    names = ', '.join(f'{t.name!r} (method {t.method!r})' for t in bad)
    raise ValueError(f'data.drop_remainder=False pads the last partial batch and masks its '
                     f'padding rows, but term {names} cannot exclude masked rows (no per-sample '
                     f'loss, not declared masked); set data.drop_remainder=True.')
