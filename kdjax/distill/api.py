"""The contract between distillation methods and the generic train step.

Synopsis:
  A *method* is a builder registered under a name. A config names its *terms*
  (the key is the term's name and, unless `method` is given, its method):

      config.distill.terms = {'kd': dict(weight=0.9, temperature=4.0),
                              'at': dict(weight=1000.0)}

  Before anything is compiled, `resolve_terms` turns each entry into a `Term`
  by calling the method's builder with the entry's keyword arguments and a
  `BuildInfo` that holds the *shapes* of every student and teacher feature
  (from `jax.eval_shape`). Builders check feature names, shapes and
  hyper-parameters there, so a typo fails in milliseconds, not after a compile.

  A term declares in `Term.needs` what it asks of the step beyond the core
  `Context` (images, dataset indices, extra passes, teacher BN on batch
  statistics, a stochastic-depth student, update groups, ...); the step builds
  only what some term declares.

  Inside the jitted step every term sees a `Context` (features of both models,
  labels, a PRNG key, training progress, plus what it declared) and its own auxiliary
  variables (connectors, embeddings, memory banks). It returns its loss, some
  metrics and the new non-trainable auxiliary state. The step sums
  `ce_weight * CE + sum(term.weight * term_loss)`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp

from kdjax.models.spec import ModelSpec
# The registry lives in its own module; its names are re-exported here so a method
# file imports the whole contract (types, registry, helpers) from one place.
from kdjax.distill.registry import (MethodInfo, _did_you_mean, build_term, check_masking,  # noqa: F401
                                    check_spec, get_method, hyperparameters, register_method,
                                    registered_methods, resolve_terms)

Array = jax.Array
Features = Mapping[str, Array]
AuxVars = Mapping[str, Any]  # flax-style {'params': ..., 'batch_stats': ..., 'bank': ...}


@dataclasses.dataclass(frozen=True)
class Needs:
  """What a term asks of the train step beyond the core `Context`.

  The step builds only what some term of the stage declares, so a new
  unusual method adds a field here (a hook), never a flag to the step or a
  global config key. `merge_needs` combines the terms of one stage.

  Attributes:
    images: `ctx.images`, the augmented batch (extra passes on it).
    index: `ctx.index`, the dataset indices of the batch (memory banks).
    teacher_variables: `ctx.teacher_variables` (margins, frozen heads).
    student_pass: `ctx.apply_student(x, **kw)`: a differentiable extra pass of
      the current student (train mode, statistics updates discarded).
    teacher_pass: `ctx.apply_teacher(x)`: an extra pass of the frozen teacher
      (differentiable with respect to its input). On a masked batch both take
      `mask=` [rows of x] when x is not the batch itself (BN statistics).
    teacher_batch_stats: the teacher runs with BN on batch statistics (OFD's
      official `t_net.train()`); running statistics are not updated.
    student_eval: the student's main pass runs in eval mode (running BN
      statistics, not updated): init stages that train only auxiliary
      modules on frozen features (FT's paraphraser, IE-KD's auto-encoder).
    survival: per-block survival probabilities of stochastic depth: the main
      student pass drops each residual branch with a Bernoulli keep mask drawn
      from (seed, step), `ctx.survival` holds them, and evaluation deploys the
      expected network (branches scaled by them).
    update_groups: group name -> regexes over parameter paths ('student/...',
      'aux/{term}/...'; '{term}' is replaced by the term's name). Groups are
      updated one after another, each after a fresh forward pass that sees the
      groups updated before it (DML's alternating order); parameters in no
      group are frozen. Empty: one simultaneous update.
  """
  images: bool = False
  index: bool = False
  teacher_variables: bool = False
  student_pass: bool = False
  teacher_pass: bool = False
  teacher_batch_stats: bool = False
  student_eval: bool = False
  survival: tuple[float, ...] | None = None
  update_groups: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)

  def for_term(self, name: str) -> 'Needs':
    """The same needs with '{term}' in the update-group regexes replaced by `name`."""
    if not self.update_groups:
      return self
    groups = {g: tuple(r.replace('{term}', name) for r in rs)
              for g, rs in self.update_groups.items()}
    return dataclasses.replace(self, update_groups=groups)


def merge_needs(needs: Sequence[Needs]) -> Needs:
  """The union of several terms' needs (one stage); conflicting survival schedules raise."""
  out = {f.name: f.default for f in dataclasses.fields(Needs) if f.name != 'update_groups'}
  groups: dict[str, tuple[str, ...]] = {}
  for n in needs:
    for f in dataclasses.fields(Needs):
      value = getattr(n, f.name)
      if f.name == 'update_groups':
        for g, rs in value.items():
          groups[g] = groups.get(g, ()) + tuple(r for r in rs if r not in groups.get(g, ()))
      elif f.name == 'survival':
        if value is not None and out['survival'] is not None and tuple(value) != out['survival']:
          raise ValueError(f'two terms ask for different stochastic-depth survival probabilities '
                           f'({out["survival"][-1]} vs {value[-1]} final); use one.')
        if value is not None:
          out['survival'] = tuple(float(v) for v in value)
      else:
        out[f.name] = out[f.name] or value
  return Needs(**out, update_groups=groups)


@dataclasses.dataclass(frozen=True)
class Context:
  """Everything a term may read inside the traced train step.

  Core fields, always present: `student` and `teacher` are the models'
  feature dicts (they include 'logits'; teacher features are already under
  `stop_gradient`), `labels`, a per-term PRNG key `rng`, `progress` (epochs
  done in the current stage, a float scalar, fractional within an epoch) and
  `stage_epochs` (that stage's length) for schedules.

  Declared capabilities (see `Needs`), None unless some term of the stage
  declares them: `images`, `index`, `teacher_variables`, `apply_student(images,
  **kw)` (reruns the student in train mode, BN on batch statistics,
  statistics updates discarded, with the *current* differentiated
  parameters), `apply_teacher(images)` (reruns the frozen teacher; its
  parameters are never trained because they are not part of the optimised
  state) and `survival` (per-block survival probabilities; the main student
  pass then used a Bernoulli keep mask drawn from them). Both `apply_*`
  return `(logits, features)`.

  `mask`: None for a batch whose rows are all valid (the default path). With
  `data.drop_remainder=False` it is float32 [B], 1 for valid rows and 0 for
  the padding rows of the last partial batch; only terms declaring
  `Term.masked` read it (a `per_sample` term is masked by the step). Train-mode
  BatchNorm already uses the valid rows only, also in `apply_*`; a pass on
  another batch size passes its own `mask=` [its rows] to `apply_*`.
  """
  student: Features
  teacher: Features | None
  labels: Array
  rng: Array
  progress: Array
  stage_epochs: float
  train: bool
  num_classes: int
  images: Array | None = None
  index: Array | None = None
  apply_student: Callable[..., tuple[Array, Features]] | None = None
  apply_teacher: Callable[..., tuple[Array, Features]] | None = None
  teacher_variables: Any = None
  survival: Array | None = None
  mask: Array | None = None


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
    needs: what the term asks of the step beyond the core `Context` (`Needs`).
    per_sample: optional `LossFn` returning the per-sample losses [N] (same
      metrics and new state as `loss`) whose batch mean is `loss`'s value; it
      lets a wrapper reweight samples (`methods.ipwd.with_ipw`). On a masked
      batch (`Context.mask`, `data.drop_remainder=False`) the step takes the
      mean of these over the valid rows, unless `masked` is set; its only
      state updates must be auxiliary BN statistics (masked by the step).
    masked: `loss` honours `ctx.mask` itself (batch-level losses: relations
      over the batch, memory-bank writes): with a mask its value, metrics and
      state equal those of the valid rows alone. A term with neither `masked`
      nor `per_sample` is rejected when the batch can be masked.
  """
  name: str
  method: str
  weight: float
  loss: LossFn
  init: InitFn | None = None
  needs_teacher: bool = True
  aux_weight_decay: bool = True
  needs: Needs = Needs()
  per_sample: LossFn | None = None
  masked: bool = False

  @property
  def supports_mask(self) -> bool:
    return self.masked or self.per_sample is not None

  def __call__(self, aux: AuxVars, ctx: Context):
    return self.loss(aux, ctx)


@dataclasses.dataclass(frozen=True)
class BuildInfo:
  """What a builder knows when it resolves a term: shapes, never values."""
  student_shapes: Mapping[str, jax.ShapeDtypeStruct]
  teacher_shapes: Mapping[str, jax.ShapeDtypeStruct] | None
  num_classes: int
  num_train: int
  student_spec: ModelSpec | None = None
  teacher_spec: ModelSpec | None = None
  # Training labels (after noise/imbalance) indexed like ctx.index, for
  # methods that sample by class (CRD's negatives). numpy int [num_train].
  train_labels: Any = None

  def feature(self, who: str, key: str) -> jax.ShapeDtypeStruct:
    """Shape of feature `key` of 'student' or 'teacher', with a helpful error."""
    shapes = self.student_shapes if who == 'student' else self.teacher_shapes
    if shapes is None:
      raise ValueError('this method needs a teacher, but the config has none '
                       '(set config.teacher.checkpoint).')
    if key not in shapes:
      raise ValueError(f'unknown {who} feature {key!r} of {self.arch(who)}'
                       f'{_did_you_mean(key, shapes)}; known: {sorted(shapes)}')
    return shapes[key]

  @property
  def student_arch(self) -> str:
    return self.student_spec.arch if self.student_spec else ''

  @property
  def teacher_arch(self) -> str:
    return self.teacher_spec.arch if self.teacher_spec else ''

  def arch(self, who: str) -> str:
    return self.student_arch if who == 'student' else self.teacher_arch

  def spec(self, who: str) -> ModelSpec:
    """The `ModelSpec` of 'student' or 'teacher' (what the model says about itself)."""
    spec = self.student_spec if who == 'student' else self.teacher_spec
    if spec is None:
      raise ValueError(f'this method needs the {who} model\'s description, but the build has '
                       'none' + (' (set config.teacher.checkpoint).' if who == 'teacher' else '.'))
    return spec

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
                 rng=jax.random.key(0), progress=jnp.zeros(()),
                 stage_epochs=1.0, train=False, num_classes=info.num_classes)
