"""Everything built before the first compile: data, models, teacher, terms, state.

All user errors (unknown architecture, method, feature or hyper-parameter,
missing teacher or dataset, incompatible pairs) surface here, from shapes
alone (`jax.eval_shape`), before any XLA compilation.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from kdjax import config as config_lib
from kdjax import data as data_lib
from kdjax import models
from kdjax import runtime
from kdjax.data import augment
from kdjax.models import fold
from kdjax.distill import api as distill_api
from kdjax.distill import methods as _methods  # noqa: F401  (registers every method)
from kdjax.models.cohort import Cohort
from kdjax.train import checkpoint as ckpt_lib


@dataclasses.dataclass
class Teacher:
  model: Any
  variables: Any
  arch: str
  hash: str
  workdir: str


@dataclasses.dataclass
class InitSource:
  """`model.init_from`: the student variables of another run's newest checkpoint."""
  workdir: str
  step: int
  variables: Any     # {'params', 'batch_stats'} of that run's student
  hash: str          # checkpoint.tree_hash of `variables` as read (record in results)
  reinit_head: bool  # class counts differ: `head` keeps this run's fresh initialisation


@dataclasses.dataclass
class Setup:
  config: Any
  dataset: Any
  student: Any
  student_arch: str
  teacher: Teacher | None
  stages: list
  stage_terms: list  # per stage: tuple[Term, ...]
  all_terms: dict    # name -> Term (first occurrence), owner of aux variables
  steps_per_epoch: int
  stage_bounds: list  # per stage: (start_step, end_step)
  survival: tuple[float, ...] | None  # declared by a term: evaluate the expected network
  mesh: Mesh
  info: distill_api.BuildInfo
  init_from: InitSource | None = None

  @property
  def total_steps(self) -> int:
    return self.stage_bounds[-1][1]

  def stage_of(self, step: int) -> int:
    """The stage that runs `step` next (the last one once training is over)."""
    for i, (_, end) in enumerate(self.stage_bounds):
      if step < end:
        return i
    return len(self.stage_bounds) - 1


def make_mesh(devices=None) -> Mesh:
  """A one-axis data-parallel mesh. Auto axes: XLA propagates the batch
  sharding we constrain inside the step (explicit axes would demand
  `reshard` at every op)."""
  devices = jax.devices() if devices is None else devices
  return jax.make_mesh((len(devices),), ('data',), axis_types=(jax.sharding.AxisType.Auto,),
                       devices=devices)


def replicated(mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def data_sharded(mesh) -> NamedSharding:
  return NamedSharding(mesh, P('data'))


def input_shape(dataset) -> tuple[int, ...]:
  return (2,) + tuple(dataset.image_shape)


def feature_shapes(model, variables_shape, dataset) -> dict[str, jax.ShapeDtypeStruct]:
  x = jax.ShapeDtypeStruct(input_shape(dataset), jnp.float32)
  logits, feats = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables_shape, x)
  return {**feats, 'logits': logits}


def load_teacher(cfg, dataset) -> Teacher | None:
  path = cfg.teacher.checkpoint
  if not path:
    return None
  path = os.path.abspath(path)
  cfg_path = os.path.join(path, 'config.json')
  if not os.path.exists(cfg_path):
    raise FileNotFoundError(
        f'teacher.checkpoint={path!r} is not a kdjax workdir (no config.json). Train a teacher '
        f'first, e.g. `kdjax train --config configs/{dataset.name}/teacher_<arch>.py --workdir {path}`.')
  with open(cfg_path) as f:
    tcfg = json.load(f)
  arch, kwargs = tcfg['model']['name'], tcfg['model'].get('kwargs', {}) or {}
  if cfg.teacher.arch and cfg.teacher.arch != arch:
    raise ValueError(f'config.teacher.arch={cfg.teacher.arch!r} but the checkpoint in {path} '
                     f'is a {arch!r}.')
  if tcfg['data']['name'] != dataset.name:
    raise ValueError(f'the teacher in {path} was trained on {tcfg["data"]["name"]!r}, '
                     f'but this run uses {dataset.name!r}.')
  model = models.create(arch, dataset.num_classes, **kwargs)
  ckpt_dir = os.path.join(path, 'checkpoints')
  step, state = ckpt_lib.restore_exported(ckpt_dir)
  variables = {'params': state['params']['student'], 'batch_stats': state['batch_stats']}
  expected = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(input_shape(dataset)), train=False))
  got = jax.tree.map(lambda a: a.shape, variables)
  want = jax.tree.map(lambda a: a.shape, dict(expected))
  if got != want:
    raise ValueError(f'teacher checkpoint {ckpt_dir} (step {step}) does not match architecture {arch!r}.')
  variables = jax.tree.map(jnp.asarray, variables)
  return Teacher(model, variables, arch, ckpt_lib.tree_hash(variables), path)


def _path(path) -> str:
  return '/'.join(str(getattr(k, 'key', k)) for k in path)


def _is_head(path: str) -> bool:
  """A classifier parameter: a `head` module at any depth (cohort members' heads too)."""
  return 'head' in path.split('/')


def _shapes(tree) -> dict:
  return {_path(p): tuple(x.shape) for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _first_mismatch(got: dict, want: dict) -> str | None:
  """The first path (sorted) missing on one side or with another shape, described."""
  for path in sorted(set(got) | set(want)):
    if path not in got:
      return f'{path} (absent in the source run; shape {want[path]} here)'
    if path not in want:
      return f'{path} (shape {got[path]} in the source run; absent here)'
    if got[path] != want[path]:
      return f'{path} (shape {got[path]} in the source run, {want[path]} here)'
  return None


def load_init_from(cfg, var_shapes) -> InitSource | None:
  """Read and check `model.init_from` (shapes against this run's student; no compile).

  The source must be a kdjax workdir whose student has this run's architecture
  (`model.name`, `model.kwargs`, `model.cohort`). When its class count differs
  from this run's, every `head` parameter is re-initialised (transfer to
  another label set); any other mismatch is an error naming the first path.
  """
  path = cfg.model.get('init_from', '')
  if not path:
    return None
  path = os.path.abspath(path)
  cfg_path = os.path.join(path, 'config.json')
  if not os.path.exists(cfg_path):
    raise FileNotFoundError(f'model.init_from={path!r} is not a kdjax workdir (no config.json); '
                            f'give the --workdir of a `kdjax train` run.')
  with open(cfg_path) as f:
    src = json.load(f)
  here = (cfg.model.name, list(cfg.model.cohort or ()), dict(cfg.model.kwargs or {}))
  there = (src['model']['name'], list(src['model'].get('cohort') or ()),
           dict(src['model'].get('kwargs') or {}))
  if here != there:
    raise ValueError(f'model.init_from: the run in {path} trains model.name={there[0]!r}, '
                     f'cohort={there[1]}, kwargs={there[2]}, but this run has '
                     f'model.name={here[0]!r}, cohort={here[1]}, kwargs={here[2]}; the '
                     f'architectures must match.')
  step, state = ckpt_lib.restore_exported(os.path.join(path, 'checkpoints'))
  variables = {'params': state['params']['student'], 'batch_stats': state.get('batch_stats', {})}
  want = _shapes({'params': var_shapes['params'], 'batch_stats': var_shapes.get('batch_stats', {})})
  got = _shapes(variables)
  reinit_head = any(_is_head(p) and s != want.get(p) for p, s in got.items())
  if reinit_head:
    got = {p: s for p, s in got.items() if not _is_head(p)}
    want = {p: s for p, s in want.items() if not _is_head(p)}
  bad = _first_mismatch(got, want)
  if bad is not None:
    raise ValueError(f'model.init_from: the checkpoint of {path} (step {step}) does not fit this '
                     f'student; first mismatch: {bad}.')
  variables = jax.tree.map(jnp.asarray, variables)
  return InitSource(path, int(step), variables, ckpt_lib.tree_hash(variables), reinit_head)


DTYPES = {'float32': None, 'bfloat16': jnp.bfloat16}


def compute_dtype(cfg) -> dict:
  """Model kwargs for the config's compute dtype (`dtype`, 'float32' when absent).

  'bfloat16' makes the student's convolutions and dense layers compute in
  bfloat16 (parameters, BN statistics, features and logits stay float32, so
  every loss is computed in float32). 'float32' adds nothing, so float32 runs
  build exactly the models they always did.
  """
  name = cfg.get('dtype', 'float32')
  if name not in DTYPES:
    raise ValueError(f'dtype={name!r} is not supported; use one of {sorted(DTYPES)}.')
  return {} if DTYPES[name] is None else {'dtype': DTYPES[name]}


def build(cfg, *, dataset=None, teacher: Teacher | None = None,
          read_init_from: bool = True) -> Setup:
  """Resolve everything; `dataset`/`teacher` replace the config's (benchmarks).

  `read_init_from=False` skips `model.init_from` (evaluating or exporting a run
  whose own checkpoint replaces the initialisation anyway).
  """
  config_lib.check(cfg)
  stages = config_lib.stages(cfg)
  for st in stages:  # method and hyper-parameter typos: before any data or teacher is read
    for key, spec in st.distill.terms.items():
      distill_api.check_spec({'method': key, **dict(spec)})
  dataset = dataset if dataset is not None else data_lib.load(cfg.data)
  kwargs = dict(cfg.model.kwargs) if cfg.model.kwargs else {}
  kwargs.update(compute_dtype(cfg))
  if cfg.model.cohort:
    student = Cohort(tuple(models.create(a, dataset.num_classes, **kwargs) for a in cfg.model.cohort))
  else:
    student = models.create(cfg.model.name, dataset.num_classes, **kwargs)
  teacher = teacher if teacher is not None else load_teacher(cfg, dataset)
  if teacher is not None and runtime.fold_teacher_bn():  # opt-in (CPU): same outputs to 1e-6
    teacher = dataclasses.replace(teacher, model=fold.BatchNormFolded(teacher.model))

  n_dev = jax.device_count()
  for st in stages:
    if st.optim.batch_size % n_dev:
      raise ValueError(f'batch size {st.optim.batch_size} is not divisible by the {n_dev} devices.')
  if len({st.optim.batch_size for st in stages}) != 1:
    raise ValueError('all stages must use the same batch size.')
  drop_remainder = cfg.data.get('drop_remainder', True)
  if not drop_remainder and not dataset.in_memory:
    raise ValueError(f'data.drop_remainder=False (a masked last partial batch) needs an in-memory '
                     f'dataset; {dataset.name!r} is streamed in full batches. Set '
                     f'data.drop_remainder=True.')
  steps_per_epoch = augment.steps_per_epoch(dataset.num_train, stages[0].optim.batch_size,
                                            drop_remainder)

  var_shapes = jax.eval_shape(
      lambda: student.init(jax.random.key(0), jnp.zeros(input_shape(dataset)), train=False))
  s_shapes = feature_shapes(student, var_shapes, dataset)
  init_from = load_init_from(cfg, var_shapes) if read_init_from else None
  t_shapes = None
  if teacher is not None:
    t_shapes = feature_shapes(teacher.model, teacher.variables, dataset)
  info = distill_api.BuildInfo(student_shapes=s_shapes, teacher_shapes=t_shapes,
                               num_classes=dataset.num_classes, num_train=dataset.num_train,
                               student_spec=student.spec(),
                               teacher_spec=teacher.model.spec() if teacher else None,
                               train_labels=dataset.train_labels)
  stage_terms, all_terms = [], {}
  for st in stages:
    specs = []
    for key, spec in st.distill.terms.items():
      spec = dict(spec)
      spec.setdefault('method', key)
      spec.setdefault('name', key)
      specs.append(spec)
    terms = distill_api.resolve_terms(specs, info)
    if not drop_remainder:  # a masked last batch: every term must exclude the padding rows
      distill_api.check_masking(terms)
    stage_terms.append(terms)
    for t in terms:
      all_terms.setdefault(t.name, t)

  bounds, start = [], 0
  for st in stages:
    end = start + int(round(st.epochs * steps_per_epoch))
    bounds.append((start, end))
    start = end

  # Stochastic depth is declared by terms; evaluation deploys the expected network.
  survival = distill_api.merge_needs([t.needs for t in all_terms.values()]).survival
  return Setup(cfg, dataset, student, cfg.model.name, teacher, stages, stage_terms, all_terms,
               steps_per_epoch, bounds, survival, make_mesh(), info, init_from)


def init_variables(setup: Setup) -> dict:
  """Fresh student and auxiliary variables; the optimizer state is added per stage."""
  key = jax.random.key(setup.config.seed)
  k_model, k_aux = jax.random.split(key)
  variables = setup.student.init(k_model, jnp.zeros(input_shape(setup.dataset)), train=False)
  if setup.init_from is not None:
    # Another run's student; with another class count its `head` keeps the fresh init.
    src = setup.init_from
    fresh = {'params': variables['params'], 'batch_stats': variables.get('batch_stats', {})}
    variables = jax.tree_util.tree_map_with_path(
        lambda p, new, old: new if (src.reinit_head and _is_head(_path(p))) else old,
        fresh, src.variables)
  ctx = distill_api.example_context(setup.info)
  aux_params, aux_state = {}, {}
  for i, (name, term) in enumerate(sorted(setup.all_terms.items())):
    if term.init is None:
      continue
    aux = dict(term.init(jax.random.fold_in(k_aux, i), ctx))
    aux_params[name] = aux.pop('params', {})
    if aux:
      aux_state[name] = aux
  return {'step': jnp.zeros((), jnp.int32),
          'params': {'student': variables['params'], 'aux': aux_params},
          'batch_stats': variables.get('batch_stats', {}), 'aux_state': aux_state}
