"""Seeds in parallel: N independent runs of one config in one compiled program.

Synopsis:
  `--config.num_seeds=N` trains the seeds seed, seed+1, ..., seed+N-1 (or the
  `--config.seeds=(3, 7)` list) together. The whole state (student, auxiliary
  modules, memory banks, optimizer) gets a leading seed axis and the unchanged
  step of `step.py` is vmapped over (state, seed); the teacher and the dataset
  are unbatched arguments, shared and never copied. The seed is a traced int32
  there, and every random number derives from it exactly as from a static
  seed: each seed has its own initialisation, data order, augmentation,
  stochastic-depth masks and term keys, so seed k of a group equals a separate
  run with that seed up to float rounding (a vmapped convolution may sum in
  another order).

  WORKDIR/config.json    the group's config
  WORKDIR/checkpoints/   the stacked state (leading axis: seed); an interrupted
                         group resumes exactly, like a single run
  WORKDIR/seed<k>/       config.json (seed = the k-th seed, num_seeds = 1),
                         metrics.jsonl, results.json and the final checkpoint,
                         as a separate run with that seed writes them: `kdjax
                         report WORKDIR` reads them as seeds, and `kdjax eval`,
                         `export`, `analyze` and `teacher.checkpoint` take a
                         seed's directory.

  The group's workdir is locked and owns its config like any run's
  (`workdir.claim`): resuming with another seed list is refused.
  Limits: in-memory datasets (a host stream has one order for all seeds), one
  process. `SeedGroup` is the group's runner for the training driver
  (`kdjax.train.driver`), which runs single runs the same way.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from kdjax import config as config_lib
from kdjax.train import checkpoint as ckpt_lib, dispatch, driver, evaluate, inputs, loop
from kdjax.train import setup as setup_lib, workdir as workdir_lib

# Seeds are traced as int32; jax.random.key of a non-negative int32 equals that of the Python int.
MAX_SEED = 2**31 - 1


def is_group(cfg) -> bool:
  """Whether `cfg` asks for seeds in parallel (num_seeds other than 1, or a seed list)."""
  return cfg.get('num_seeds', 1) != 1 or bool(cfg.get('seeds', ()))


def seed_list(cfg) -> list[int]:
  """The group's seeds: the `seeds` list, else seed + k for k < num_seeds. Checks both."""
  n, seeds = cfg.get('num_seeds', 1), tuple(cfg.get('seeds', ()) or ())
  if isinstance(n, bool) or not isinstance(n, int) or n < 1:
    raise ValueError(f'num_seeds={n!r}: give a positive integer (1 = a single run), '
                     f'e.g. --config.num_seeds=5.')
  if seeds:
    if n not in (1, len(seeds)):
      raise ValueError(f'num_seeds={n} but seeds={list(seeds)} lists {len(seeds)}; give one of '
                       f'them (a seed list needs no num_seeds).')
  else:
    seeds = tuple(cfg.seed + k for k in range(n))
  bad = [s for s in seeds if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s <= MAX_SEED]
  if bad:
    raise ValueError(f'seeds of a group must be integers in [0, 2**31 - 1] (they are traced as '
                     f'int32); got {bad}.')
  if len(set(seeds)) != len(seeds):
    raise ValueError(f'seeds={list(seeds)} repeats a seed; its runs would be identical.')
  return list(seeds)


def check_group(cfg) -> list[int]:
  """[] for a single run, else the group's seeds (bad settings raise, before anything is built)."""
  return seed_list(cfg) if is_group(cfg) else []


def seed_config(cfg, seed: int):
  """One seed's config: exactly what a separate run with that seed writes."""
  c = copy.deepcopy(cfg)
  c.seed = seed
  if 'num_seeds' in c:
    c.num_seeds = 1
  if 'seeds' in c:
    c.seeds = ()
  return c


def check_not_group(cfg, workdir: str) -> None:
  """Commands that read one run's checkpoint get a seed directory, not the group's."""
  if is_group(cfg):
    n = len(seed_list(cfg))
    raise ValueError(f'{workdir!r} holds {n} seeds trained together; give one seed\'s directory, '
                     f'{os.path.join(workdir, "seed0")} ... seed{n - 1}.')


def _check_supported(cfg, setup) -> None:
  if not setup.dataset.in_memory:
    raise ValueError(f'num_seeds > 1 needs an in-memory dataset (digits, CIFAR, ...); '
                     f'{cfg.data.name!r} is streamed from the host in one order. Run its seeds as '
                     f'separate runs (--config.seed=k).')
  if jax.process_count() > 1:
    raise ValueError('num_seeds > 1 runs in one process; run multi-host jobs one seed at a time.')


def stack(trees: list[Any]) -> Any:
  return jax.tree.map(lambda *a: jnp.stack(a), *trees)


def unstack(tree: Any, k: int) -> Any:
  return jax.tree.map(lambda a: a[k], tree)


def init_group(setup, seeds: list[int]) -> dict:
  """Stacked fresh variables; seed k's are `init_variables` of the run with that seed."""
  return stack([setup_lib.init_variables(dataclasses.replace(setup, config=seed_config(setup.config, s)))
                for s in seeds])


def fresh_state(setup, variables):
  return loop.fresh_state(setup, variables, batched=True)


def restore(setup, ckpt, variables, all_unreadable_aside: bool = True):
  """(step, stacked state) from the newest readable checkpoint, or None (see loop.restore)."""
  return loop.restore(setup, ckpt, variables, all_unreadable_aside, batched=True)


def compile_group_stage(setup, stage_idx: int, tx, steps: int = 1):
  """`fn(state, teacher_vars, data, seeds, n) -> (state, metrics [steps, seed, ...])`, jitted:
  n <= steps steps of the step vmapped over (state, seeds)."""
  cfg, st, ds = setup.config, setup.stages[stage_idx], setup.dataset
  repl = setup_lib.replicated(setup.mesh)

  def one_seed(state, teacher_vars, data, seed):
    # The same batch source and step as a single run, built around the traced seed.
    batch_fn = inputs.in_memory_batch_fn(ds, cfg.data, seed=seed, batch_size=st.optim.batch_size,
                                         steps_per_epoch=setup.steps_per_epoch)
    return dispatch.stage_step(setup, stage_idx, tx, batch_fn, seed)(state, teacher_vars, data)

  group = jax.vmap(one_seed, in_axes=(0, None, None, 0))

  if steps == 1:  # the plain step, as a single run runs k = 1 (see dispatch.dispatcher)
    def fn(state, teacher_vars, data, seeds, n):
      del n  # always 1
      state, m = group(state, teacher_vars, data, seeds)
      return state, jax.tree.map(lambda x: x[None], m)
  else:  # n <= k vmapped steps in one dispatch: metrics [k, seed, ...]
    fn = dispatch.loop_steps(group, steps)
  return jax.jit(fn, donate_argnums=(0,), out_shardings=(repl, repl))


class SeedGroup(driver.Runner):
  """The group's seeds, trained in one vmapped program; each seed directory is a member.

  Each seed's metrics.jsonl and results.json read like a separate run's; the
  group's workdir holds the stacked checkpoints, and each seed directory gets
  its final state as a checkpoint of its own.
  """

  def __init__(self, cfg, setup, workdir: str):
    self.seeds = seed_list(cfg)
    _check_supported(cfg, setup)
    self.setup, self.workdir, self.keep = setup, workdir, cfg.keep_checkpoints
    self.cfgs = [seed_config(cfg, s) for s in self.seeds]
    self.dirs = [os.path.join(workdir, f'seed{k}') for k in range(len(self.seeds))]
    self.members = [f'seed {s} ({d})' for s, d in zip(self.seeds, self.dirs)]
    self.resuming = f'{len(self.seeds)} seeds '
    self.what_changed = 'the seeds, the model or its auxiliary modules'
    self.seed_arr = jax.device_put(jnp.asarray(self.seeds, jnp.int32),
                                   setup_lib.replicated(setup.mesh))

  def make_dirs(self):
    super().make_dirs()
    for d, c in zip(self.dirs, self.cfgs):
      workdir_lib.write_atomic(os.path.join(d, 'config.json'), config_lib.to_json(c))

  def init_variables(self):
    return init_group(self.setup, self.seeds)

  def restore(self, ckpt, variables, all_unreadable_aside):
    return restore(self.setup, ckpt, variables, all_unreadable_aside)

  def fresh_state(self, variables):
    return fresh_state(self.setup, variables)

  def opt_init(self, tx):
    return jax.vmap(tx.init)

  def step_of(self, state) -> int:
    return int(state['step'][0])

  def compile(self, stage_idx, tx, k):
    fn = compile_group_stage(self.setup, stage_idx, tx, steps=k)
    return lambda state, teacher_vars, data, n: fn(state, teacher_vars, data, self.seed_arr, n)

  def split(self, metrics):
    return [{name: float(v[k]) for name, v in metrics.items()} for k in range(len(self.seeds))]

  def evaluator(self):
    return evaluate.GroupEvaluator(self.setup)

  def show_eval(self, bar, stage, evals, total_epochs, sec_per_epoch):
    if bar is not None:
      bar.set_postfix(top1=f'{np.mean([r["top1"] for r in evals]):.4f}')

  def member_state(self, state, k):
    return unstack(state, k)

  def extra_results(self, k):
    # Each seed's images per second is the group's divided by the number of seeds.
    return {'group': {'workdir': os.path.abspath(self.workdir), 'index': k, 'seeds': self.seeds}}

  def member_done(self, k, step, state):
    # The seed's final state as its own checkpoint: eval, export, analyze and
    # teacher.checkpoint read a seed directory like any run's.
    seed_ckpt = ckpt_lib.Checkpointer(os.path.join(self.dirs[k], 'checkpoints'), keep=self.keep)
    seed_ckpt.save(step, state)
    seed_ckpt.close()

  def outcome(self, runs):
    return {'num_seeds': len(self.seeds), 'seeds': self.seeds, 'workdirs': self.dirs, 'runs': runs}


def train(cfg, setup, workdir: str, t_start: float, stop_after_steps: int | None = None,
          on_config_change: str = 'error') -> dict[str, Any]:
  """Trains the group's seeds in one program; returns {'seeds', 'workdirs', 'runs': [results]}.

  `loop.train_and_evaluate` calls the driver this way once the workdir is
  locked and claimed. `stop_after_steps` simulates an interruption (tests).
  """
  return driver.run(SeedGroup(cfg, setup, workdir), cfg, setup, workdir, t_start,
                    stop_after_steps, on_config_change)
