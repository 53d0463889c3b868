"""`train_and_evaluate(config, workdir)`: a run in its workdir, and the state of a single run.

Synopsis:
  value checks -> lock the workdir and check it holds this config's run
  (`kdjax.train.workdir`) -> setup (all checks, no compile) -> the training
  driver (`kdjax.train.driver`) with a `SingleRun`, or with a
  `multiseed.SeedGroup` when the config asks for seeds in parallel: resume
  from the workdir's newest readable checkpoint, for each stage build the
  optimizer and step, jit it over the data-parallel mesh, run, evaluate every
  `eval_every_epochs`, checkpoint every `checkpoint_every_epochs` and at stage
  ends -> results.json.

  `restore`, `fresh_state`, `compile_stage` and `Evaluator` build a run's
  pieces for the benchmark, export, interop and tests.
"""

from __future__ import annotations

import os
import time
from typing import Any

import jax

from kdjax import config as config_lib
from kdjax.train import driver, inputs, optim, setup as setup_lib
from kdjax.train import workdir as workdir_lib
# Re-exported: a run's pieces keep their names here (bench, export, interop, tests).
from kdjax.train.dispatch import NonFiniteLossError, compile_stage, steps_per_dispatch
from kdjax.train.dispatch import check_finite as _check_finite
from kdjax.train.dispatch import dispatcher as _dispatcher
from kdjax.train.evaluate import Evaluator, eval_line, print_eval

__all__ = ['train_and_evaluate', 'evaluate_workdir', 'export_student', 'restore', 'fresh_state',
           'with_opt', 'compile_stage', 'steps_per_dispatch', 'Evaluator', 'eval_line',
           'NonFiniteLossError', 'SingleRun', '_check_finite', '_dispatcher']


def with_opt(tx, variables, batched: bool = False):
  """`variables` plus `tx`'s fresh state; `batched`: for every entry of a leading (seed) axis."""
  init = jax.vmap(tx.init) if batched else tx.init
  return {**variables, 'opt': init(variables['params'])}


def restore(setup, ckpt, variables, all_unreadable_aside: bool = False, batched: bool = False):
  """(step, state) from the newest readable checkpoint, or None.

  The abstract target carries the optimizer state of the stage that runs the
  newest checkpoint's step and replicated shardings, so a checkpoint written
  on any device count restores onto this one. `batched`: a seed group's
  stacked state.
  """
  steps = ckpt.steps()
  if not steps:
    return None
  repl = setup_lib.replicated(setup.mesh)
  tx, _ = optim.stage_tx(setup, setup.stage_of(steps[-1]), variables['params'])
  abstract = jax.eval_shape(lambda v: with_opt(tx, v, batched), variables)
  abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=repl), abstract)
  return ckpt.restore_latest(abstract, all_unreadable_aside)


def fresh_state(setup, variables, batched: bool = False):
  """A replicated train state from `init_variables`, with the first stage's optimizer."""
  tx, _ = optim.stage_tx(setup, 0, variables['params'])
  return jax.device_put(with_opt(tx, variables, batched), setup_lib.replicated(setup.mesh))


class SingleRun(driver.Runner):
  """One run: its workdir is its only member; process 0 writes (multi-host)."""

  def __init__(self, cfg, setup, workdir: str):
    self.setup = setup
    self.dirs, self.cfgs = [workdir], [cfg]

  def init_variables(self):
    return setup_lib.init_variables(self.setup)

  def restore(self, ckpt, variables, all_unreadable_aside):
    return restore(self.setup, ckpt, variables, all_unreadable_aside)

  def fresh_state(self, variables):
    return fresh_state(self.setup, variables)

  def opt_init(self, tx):
    return tx.init

  def step_of(self, state) -> int:
    return int(state['step'])

  def compile(self, stage_idx, tx, k):
    setup, cfg, ds = self.setup, self.cfgs[0], self.setup.dataset
    if ds.in_memory:
      batch_fn = inputs.in_memory_batch_fn(ds, cfg.data, seed=cfg.seed,
                                           batch_size=setup.stages[stage_idx].optim.batch_size,
                                           steps_per_epoch=setup.steps_per_epoch)
    else:
      batch_fn = inputs.streamed_batch_fn(ds)
    return _dispatcher(setup, stage_idx, tx, batch_fn, k)

  def split(self, metrics):
    return [{k: float(v) for k, v in metrics.items()}]

  def evaluator(self):
    evaluator = Evaluator(self.setup)
    return lambda state, final=False: [evaluator(state, final)]

  def show_eval(self, bar, stage, evals, total_epochs, sec_per_epoch):
    print_eval(bar, stage, evals[0], total_epochs, sec_per_epoch)

  def member_state(self, state, k):
    return state

  def outcome(self, runs):
    return runs[0]


def _absolute_teacher(cfg) -> None:
  """Stores the teacher path absolute, so the workdir works from any directory."""
  if cfg.teacher.checkpoint:
    cfg.teacher.checkpoint = os.path.abspath(os.path.expanduser(cfg.teacher.checkpoint))


def train_and_evaluate(cfg, workdir: str, *, stop_after_steps: int | None = None,
                       on_config_change: str = 'error') -> dict[str, Any]:
  """Trains (or distils) per `cfg` in `workdir`; returns the results dict.

  `on_config_change` decides what happens when `workdir` holds a run of
  another config: 'error' (stop, nothing written), 'new' (move it aside) or
  'continue' (resume under the new config); see `kdjax.train.workdir`.
  `stop_after_steps` stops (with a checkpoint, as SIGTERM does) once the
  global step reaches it; tests use it to simulate an interruption.
  """
  t_start = time.time()
  from kdjax import validate
  from kdjax.train import multiseed  # seeds in parallel: one vmapped program
  validate.check_config(cfg)
  group = multiseed.check_group(cfg)  # [] for a single run; bad seed settings fail here
  _absolute_teacher(cfg)
  is_main = jax.process_index() == 0
  cfg_json = config_lib.to_json(cfg)
  lock = None
  if is_main:
    workdir_lib.check_writable(workdir)
    lock = workdir_lib.WorkdirLock(workdir).acquire()
  try:
    if is_main:  # a mismatch stops here, before anything is written
      workdir_lib.claim(workdir, cfg_json, on_config_change, write=False)
    setup = setup_lib.build(cfg)
    if is_main:
      workdir_lib.claim(workdir, cfg_json, on_config_change)
    runner = (multiseed.SeedGroup(cfg, setup, workdir) if group else
              SingleRun(cfg, setup, workdir))
    return driver.run(runner, cfg, setup, workdir, t_start, stop_after_steps, on_config_change)
  finally:
    if lock is not None:
      lock.release()


def evaluate_workdir(workdir: str) -> dict[str, Any]:
  """See `kdjax.train.export.evaluate_workdir`."""
  from kdjax.train import export
  return export.evaluate_workdir(workdir)


def export_student(workdir: str, output: str) -> dict[str, Any]:
  """See `kdjax.train.export.export_student`."""
  from kdjax.train import export
  return export.export_student(workdir, output)
