"""The contract between distillation methods and the generic train step.

Synopsis:
  A *method* is a builder registered under a name. A config lists *terms*:

      config.distill.terms = [dict(method='kd', weight=0.9, temperature=4.0),
                              dict(method='at', weight=1000.0)]

  Before anything is compiled, `resolve_terms` turns each entry into a `Term`
  by calling the method's builder with the entry's keyword arguments and a
  `BuildInfo` that holds the *shapes* of every student and teacher feature
  (from `jax.eval_shape`). Builders check feature names, shapes and
  hyper-parameters there, so a typo fails in milliseconds, not after a compile.

  Inside the jitted step every term sees a `Context` (features of both models,
  labels, dataset indices, a PRNG key, training progress) and its own auxiliary
  variables (connectors, embeddings, memory banks). It returns its loss, some
  metrics and the new non-trainable auxiliary state. The step sums
  `ce_weight * CE + sum(term.weight * term_loss)`.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp

Array = jax.Array
Features = Mapping[str, Array]
AuxVars = Mapping[str, Any]  # flax-style {'params': ..., 'batch_stats': ..., 'bank': ...}


@dataclasses.dataclass(frozen=True)
class Context:
  """Everything a term may read inside the traced train step.

  `student` and `teacher` are the models' feature dicts (they include
  'logits'). Teacher features are already under `stop_gradient`.
  `apply_student(images, **kw)` reruns the student (train mode, BN on batch
  statistics, statistics updates discarded) with the *current*
  (differentiated) parameters; `apply_teacher(images)` reruns the frozen
  teacher in eval mode. Both return `(logits, features)`; they exist for
  methods that need extra passes (Self-Guidance's expected network, BSS's
  adversarial samples). `apply_teacher` is differentiable with respect to
  its input (BSS attacks the teacher); its parameters are never trained
  because they are not part of the optimised state.
  `survival` holds the per-block survival probabilities when the run uses
  stochastic depth (`model.stochastic_depth_final_prob < 1`), else None; the
  student pass in `student` then used a Bernoulli keep mask drawn from them.
  `progress` is the number of epochs done in the current stage (a float
  scalar, fractional within an epoch) and `stage_epochs` that stage's length,
  for methods with schedules.
  """
  student: Features
  teacher: Features | None
  labels: Array
  index: Array
  images: Array
  rng: Array
  progress: Array
  stage_epochs: float
  train: bool
  num_classes: int
  apply_student: Callable[..., tuple[Array, Features]] | None = None
  apply_teacher: Callable[..., tuple[Array, Features]] | None = None
  teacher_variables: Any = None
  survival: Array | None = None


# (aux_vars, ctx) -> (loss scalar, metrics dict, new non-'params' aux collections)
LossFn = Callable[[AuxVars, Context], tuple[Array, dict[str, Array], AuxVars]]
# (rng, ctx) -> aux variables; ctx carries example arrays of the right shapes.
InitFn = Callable[[Array, Context], AuxVars]


@dataclasses.dataclass(frozen=True)
class Term:
  """A resolved distillation term: a pure loss plus optional auxiliary state.

  Attributes:
    name: unique key of this term; its auxiliary variables live at
      `state['aux'][name]` and its metrics are logged as `loss/<name>`.
    method: the registered method it came from.
    weight: multiplier of the loss in the total.
    loss: the pure loss function (see `LossFn`).
    init: creates auxiliary variables, or None for parameter-free terms.
    needs_teacher: False for teacher-free terms (Tf-KD reg, PS-KD, ...).
    aux_weight_decay: whether the optimizer's weight decay applies to this
      term's trainable parameters (CRD's embeddings follow the student).
  """
  name: str
  method: str
  weight: float
  loss: LossFn
  init: InitFn | None = None
  needs_teacher: bool = True
  aux_weight_decay: bool = True

  def __call__(self, aux: AuxVars, ctx: Context):
    return self.loss(aux, ctx)


@dataclasses.dataclass(frozen=True)
class BuildInfo:
  """What a builder knows when it resolves a term: shapes, never values."""
  student_shapes: Mapping[str, jax.ShapeDtypeStruct]
  teacher_shapes: Mapping[str, jax.ShapeDtypeStruct] | None
  num_classes: int
  num_train: int
  student_arch: str = ''
  teacher_arch: str = ''
  bn_before_relu: Mapping[str, tuple[str, ...]] | None = None  # teacher's, for OFD
  # Training labels (after noise/imbalance) indexed like ctx.index, for
  # methods that sample by class (CRD's negatives). numpy int [num_train].
  train_labels: Any = None

  def feature(self, who: str, key: str) -> jax.ShapeDtypeStruct:
    """Shape of feature `key` of 'student' or 'teacher', with a helpful error."""
    shapes = self.student_shapes if who == 'student' else self.teacher_shapes
    if shapes is None:
      raise ValueError(f'this method needs a teacher, but the config has none '
                       f'(set config.teacher.checkpoint).')
    if key not in shapes:
      raise ValueError(f'unknown {who} feature {key!r} of {self.arch(who)}'
                       f'{_did_you_mean(key, shapes)}; known: {sorted(shapes)}')
    return shapes[key]

  def arch(self, who: str) -> str:
    return self.student_arch if who == 'student' else self.teacher_arch

  def stages(self, who: str, preact: bool = False) -> tuple[str, ...]:
    """Names of the stage outputs (RD's feat[1:-1]) in order."""
    shapes = self.student_shapes if who == 'student' else self.teacher_shapes
    if shapes is None:
      raise ValueError('this method needs a teacher, but the config has none.')
    out, i = [], 1
    while f'stage{i}' in shapes:
      out.append(f'stage{i}_preact' if preact else f'stage{i}')
      i += 1
    return tuple(out)


def _did_you_mean(key: str, options) -> str:
  close = difflib.get_close_matches(key, list(options), n=1)
  return f' (did you mean {close[0]!r}?)' if close else ''


# ----------------------------------------------------------------------------
# Registry

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
  terms = [built] if isinstance(built, Term) else list(built)
  if name is not None:
    if len(terms) != 1:
      raise ValueError(f'"name" given for method {method!r}, which builds {len(terms)} terms.')
    terms = [dataclasses.replace(terms[0], name=name)]
  return terms


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


# ----------------------------------------------------------------------------
# Small helpers shared by method modules.

def no_aux(fn: Callable[[Context], Array | tuple[Array, dict]]) -> LossFn:
  """Wrap a parameter-free `ctx -> loss` (or (loss, metrics)) as a `LossFn`."""
  def loss(aux, ctx):
    out = fn(ctx)
    if isinstance(out, tuple):
      return out[0], out[1], {}
    return out, {}, {}
  return loss


def pick(feats: Features, keys: Sequence[str]) -> list[Array]:
  return [feats[k] for k in keys]


FeatureArg = str | Sequence[str] | None


def resolve_features(info: BuildInfo, who: str, given: FeatureArg, default) -> tuple[str, ...]:
  """A feature argument (a name, a list, or None for `default`) as validated names."""
  if given is None:
    names = tuple(default() if callable(default) else default)
  elif isinstance(given, str):
    names = (given,)
  else:
    names = tuple(given)
  if not names:
    raise ValueError(f'no {who} features selected for {info.arch(who) or who}.')
  for k in names:
    if not isinstance(k, str):
      raise ValueError(f'{who} feature names must be strings, got {k!r}.')
    info.feature(who, k)  # raises with "did you mean"
  return names


def resolve_feature_pair(info: BuildInfo, method: str, student_features: FeatureArg,
                         teacher_features: FeatureArg, default_student, default_teacher=None):
  """Student and teacher feature lists of equal length (teacher default: the student's)."""
  s = resolve_features(info, 'student', student_features, default_student)
  t = resolve_features(info, 'teacher', teacher_features,
                       default_student if default_teacher is None else default_teacher)
  check_same_length(s, t, method)
  return s, t


def check_same_length(s_keys, t_keys, method: str):
  if len(s_keys) != len(t_keys):
    raise ValueError(f'{method}: {len(s_keys)} student features {list(s_keys)} but '
                     f'{len(t_keys)} teacher features {list(t_keys)}; list the same number.')


def example_context(info: BuildInfo, batch: int = 2) -> Context:
  """A Context of zeros with the feature shapes (batch replaced), for `init`."""
  def zeros(shapes):
    if shapes is None:
      return None
    return {k: jnp.zeros((batch,) + tuple(v.shape[1:]), v.dtype) for k, v in shapes.items()}
  return Context(student=zeros(info.student_shapes), teacher=zeros(info.teacher_shapes),
                 labels=jnp.zeros((batch,), jnp.int32), index=jnp.zeros((batch,), jnp.int32),
                 images=None, rng=jax.random.key(0), progress=jnp.zeros(()),
                 stage_epochs=1.0, train=False, num_classes=info.num_classes)
