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
  process.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from kdjax import config as config_lib
from kdjax.train import checkpoint as ckpt_lib
from kdjax.train import inputs, loop, metrics as metrics_lib, optim, setup as setup_lib
from kdjax.train import step as step_lib
from kdjax.train import workdir as workdir_lib

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


def _with_opt(tx, variables):
  return {**variables, 'opt': jax.vmap(tx.init)(variables['params'])}


def fresh_state(setup, variables):
  tx, _ = optim.stage_tx(setup, 0, variables['params'])
  return jax.device_put(_with_opt(tx, variables), setup_lib.replicated(setup.mesh))


def restore(setup, ckpt, variables, all_unreadable_aside: bool = True):
  """(step, stacked state) from the newest readable checkpoint, or None (see loop.restore)."""
  steps = ckpt.steps()
  if not steps:
    return None
  repl = setup_lib.replicated(setup.mesh)
  tx, _ = optim.stage_tx(setup, setup.stage_of(steps[-1]), variables['params'])
  abstract = jax.eval_shape(lambda v: _with_opt(tx, v), variables)
  abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=repl), abstract)
  return ckpt.restore_latest(abstract, all_unreadable_aside)


def compile_group_stage(setup, stage_idx: int, tx, steps: int = 1):
  """`fn(state, teacher_vars, data, seeds, n) -> (state, metrics [steps, seed, ...])`, jitted:
  n <= steps steps of the step vmapped over (state, seeds)."""
  cfg, st, ds = setup.config, setup.stages[stage_idx], setup.dataset
  repl = setup_lib.replicated(setup.mesh)

  def one_seed(state, teacher_vars, data, seed):
    # The same batch source and step as a single run, built around the traced seed.
    batch_fn = inputs.in_memory_batch_fn(ds, cfg.data, seed=seed, batch_size=st.optim.batch_size,
                                         steps_per_epoch=setup.steps_per_epoch)
    scfg = step_lib.StepConfig(seed=seed, steps_per_epoch=setup.steps_per_epoch,
                               stage_start_step=setup.stage_bounds[stage_idx][0],
                               stage_epochs=float(st.epochs), ce_weight=float(st.distill.ce_weight),
                               num_classes=ds.num_classes)
    fn = step_lib.make_train_step(student=setup.student,
                                  teacher=setup.teacher.model if setup.teacher else None,
                                  terms=setup.stage_terms[stage_idx], tx=tx, batch_fn=batch_fn,
                                  cfg=scfg, batch_sharding=setup_lib.data_sharded(setup.mesh))
    return fn(state, teacher_vars, data)

  group = jax.vmap(one_seed, in_axes=(0, None, None, 0))

  if steps == 1:  # the plain step, as loop.py runs k = 1 (see loop._dispatcher)
    def fn(state, teacher_vars, data, seeds, n):
      del n  # always 1
      state, m = group(state, teacher_vars, data, seeds)
      return state, jax.tree.map(lambda x: x[None], m)
    return jax.jit(fn, donate_argnums=(0,), out_shardings=(repl, repl))

  def fn(state, teacher_vars, data, seeds, n):
    # n <= k vmapped steps in one dispatch, as loop.compile_stage: metrics [k, seed, ...].
    _, m_shape = jax.eval_shape(group, state, teacher_vars, data, seeds)
    buf = jax.tree.map(lambda a: jnp.zeros((steps,) + a.shape, a.dtype), m_shape)

    def body(i, carry):
      s, b = carry
      s, m = group(s, teacher_vars, data, seeds)
      return s, jax.tree.map(lambda x, y: x.at[i].set(y), b, m)
    return jax.lax.fori_loop(0, n, body, (state, buf))
  return jax.jit(fn, donate_argnums=(0,), out_shardings=(repl, repl))


class GroupEvaluator(loop.Evaluator):
  """Evaluates every seed's student in one vmapped pass; metrics as `loop.Evaluator`'s."""

  def __init__(self, setup):
    super().__init__(setup)
    fn = step_lib.make_eval_fn(setup.student, setup.survival)
    # Outputs [batch, seed, ...], so the padded tail of the last batch slices off as usual.
    self.group_fn = jax.jit(jax.vmap(fn, in_axes=(0, 0, None), out_axes=1),
                            in_shardings=(self.repl, self.repl, self.shard), out_shardings=self.repl)

  def __call__(self, state, final: bool = False) -> list[dict[str, float]]:
    params, bs = state['params']['student'], state['batch_stats']
    outputs = self._logits(lambda x: self.group_fn(params, bs, x))
    n = jax.tree.leaves(params)[0].shape[0]
    return [self.metrics({k: v[:, i] for k, v in outputs.items()}, final) for i in range(n)]


def _check_finite(pending, terms, seeds, dirs):
  """Raises loop.NonFiniteLossError naming the first bad step, its seed and loss terms."""
  if not pending:
    return []
  host = loop._unstack(jax.device_get(pending))
  for step, m in host:
    bad = np.flatnonzero(~np.isfinite(np.asarray(m['loss/total'])))
    if bad.size:
      k = int(bad[0])
      losses = {key: float(v[k]) for key, v in m.items() if key.startswith('loss/')}
      raise loop.NonFiniteLossError(
          f'seed {seeds[k]} ({dirs[k]}): non-finite loss at step {step}: {losses}. The state was not '
          f'updated on that step and the last checkpoint is intact. Lower the learning rate or the '
          f'weight of the exploding term (terms in this stage: {[t.name for t in terms]}).')
  return host



def train(cfg, setup, workdir: str, t_start: float, stop_after_steps: int | None = None,
          on_config_change: str = 'error') -> dict[str, Any]:
  """Trains the group's seeds in one program; returns {'seeds', 'workdirs', 'runs': [results]}.

  Called by `loop.train_and_evaluate` once the workdir is locked and claimed.
  Mirrors `loop._train_loop` (logging, epoch means, evaluation, checkpoints,
  totals), so each seed's metrics.jsonl and results.json read like a
  separate run's. `stop_after_steps` simulates an interruption (tests).
  """
  seeds = seed_list(cfg)
  _check_supported(cfg, setup)
  n_seeds = len(seeds)
  cfgs = [seed_config(cfg, s) for s in seeds]
  dirs = [os.path.join(workdir, f'seed{k}') for k in range(n_seeds)]
  for d, c in zip(dirs, cfgs):
    os.makedirs(d, exist_ok=True)
    workdir_lib.write_atomic(os.path.join(d, 'config.json'), config_lib.to_json(c))
  ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, 'checkpoints'), keep=cfg.keep_checkpoints,
                               repair=True)
  writers = [metrics_lib.MetricWriter(d) for d in dirs]
  try:
    return _train_loop(cfg, setup, workdir, t_start, stop_after_steps, on_config_change, seeds,
                       cfgs, dirs, ckpt, writers)
  finally:
    loop._close_quietly(ckpt, *writers)


def _train_loop(cfg, setup, workdir, t_start, stop_after_steps, on_config_change, seeds, cfgs,
                dirs, ckpt, writers):
  n_seeds = len(seeds)
  repl = setup_lib.replicated(setup.mesh)
  totals = [workdir_lib.Totals(d) for d in dirs]
  variables = init_group(setup, seeds)
  had_checkpoints = bool(ckpt.steps())
  # As loop.py: unreadable checkpoints of this (claimed) config are corrupt and set aside,
  # unless the config was allowed to change (another seed list does not fit them).
  restored = restore(setup, ckpt, variables, all_unreadable_aside=on_config_change != 'continue')
  if restored is None and had_checkpoints and on_config_change == 'continue':
    raise ValueError(f'no checkpoint in {workdir} fits the new config (the seeds, the model or its '
                     f'auxiliary modules changed); use --force_new to start a new run instead.')
  if restored is None:
    state = fresh_state(setup, variables)
    histories = [w.truncate_after(-1) for w in writers]
    restored_step = -1
  else:
    restored_step, state = restored
    print(f'Resuming {n_seeds} seeds from checkpoint step {restored_step} in {workdir}.', flush=True)
    histories = [w.truncate_after(restored_step) for w in writers]
  bases = [t.at(restored_step) for t in totals]

  evaluator = GroupEvaluator(setup)
  ds = setup.dataset
  device_data = jax.device_put({'image': ds.train_images, 'label': ds.train_labels.astype(np.int32)},
                               repl)
  teacher_vars = inputs.replicate(setup.teacher.variables if setup.teacher else {}, repl)
  seed_arr = jax.device_put(jnp.asarray(seeds, jnp.int32), repl)

  spe = setup.steps_per_epoch
  run_name = os.path.basename(os.path.abspath(workdir))
  step = int(state['step'][0])
  images_seen, train_time = 0, 0.0  # per seed
  interrupted = False
  final_evals = None
  partial = [t.partial_epoch(step) if restored is not None else ({}, 0) for t in totals]
  epoch_sums, epoch_count = [p[0] for p in partial], partial[0][1]

  def record_totals(step, with_epoch=True):
    for k, t in enumerate(totals):
      t.record(step, {'wall_time_sec': bases[k]['wall_time_sec'] + time.time() - t_start,
                      'train_time_sec': bases[k]['train_time_sec'] + train_time,
                      'train_images': bases[k]['train_images'] + images_seen},
               epoch_sums[k] if with_epoch else None, epoch_count if with_epoch else 0)

  def save(step, state):
    record_totals(step)
    ckpt.save(step, state)

  with ckpt_lib.StopSignal() as stop:
    for stage_idx in range(setup.stage_of(step), len(setup.stages)):
      st = setup.stages[stage_idx]
      start, end = setup.stage_bounds[stage_idx]
      if step >= end:
        continue
      tx, schedule = optim.stage_tx(setup, stage_idx, state['params'])
      terms = setup.stage_terms[stage_idx]
      batch_size = st.optim.batch_size
      k_steps = loop.steps_per_dispatch(cfg, ds)
      multi_step = compile_group_stage(setup, stage_idx, tx, steps=k_steps)
      pending, bar = [], None
      t_mark, timed_steps = None, 0  # steady-state clock, as in loop.py
      while step < end:
        limit = min(end, start + ((step - start) // spe + 1) * spe)
        if stop_after_steps is not None and stop_after_steps > step:
          limit = min(limit, stop_after_steps)
        n = min(k_steps, limit - step)
        state, m = multi_step(state, teacher_vars, device_data, seed_arr, np.int32(n))
        pending.append((step, m, n))
        step += n
        if t_mark is None:
          jax.block_until_ready(m)
          t_mark = time.time()
          bar = loop._progress(cfg, run_name, st, start, end, step)
        else:
          timed_steps += n
          if bar is not None:
            bar.update(n)
        epoch_end = (step - start) % spe == 0
        stopping = stop.requested or (stop_after_steps is not None and step >= stop_after_steps)
        if (sum(e[2] for e in pending) >= cfg.log_every_steps or epoch_end or step == end
            or stopping):
          host = _check_finite(pending, terms, seeds, dirs)
          ckpt.check()
          pending = []
          now = time.time()
          train_time += now - t_mark
          images_seen += timed_steps * batch_size
          t_mark, timed_steps = now, 0
          for _, hm in host:
            w = int(hm['valid_rows'][0]) if 'valid_rows' in hm else 1  # as loop.py (same rows)
            for k in range(n_seeds):
              for name, value in hm.items():
                epoch_sums[k][name] = epoch_sums[k].get(name, 0.0) + w * float(value[k])
            epoch_count += w
          last_step, last = host[-1]
          lr = float(schedule(last_step - start))
          for k, w in enumerate(writers):
            w.write(last_step + 1, 'train',
                    {**{key: float(v[k]) for key, v in last.items()}, 'learning_rate': lr})
        epochs_done = (step - start) / spe
        if epoch_end and epoch_count:
          for k, w in enumerate(writers):
            w.write(step, 'train_epoch', {'epoch': step / spe, **{
                key: v / epoch_count for key, v in epoch_sums[k].items()}})
          epoch_sums, epoch_count = [{} for _ in seeds], 0
        if epoch_end and (round(epochs_done) % cfg.eval_every_epochs == 0 or step == end):
          evals = evaluator(state, final=(step == setup.total_steps))
          for res, w, history in zip(evals, writers, histories):
            res['epoch'] = step / spe
            res['stage'] = stage_idx
            w.write(step, 'eval', res)
            history.append({'step': step, 'kind': 'eval', **res})
          if step == setup.total_steps:
            final_evals = evals
          if bar is not None:
            bar.set_postfix(top1=f'{np.mean([r["top1"] for r in evals]):.4f}')
        if step == end and stage_idx + 1 < len(setup.stages):
          ntx, _ = optim.stage_tx(setup, stage_idx + 1, state['params'])
          state = {**state, 'opt': jax.jit(jax.vmap(ntx.init), out_shardings=repl)(state['params'])}
        if (epoch_end and round(epochs_done) % cfg.checkpoint_every_epochs == 0) or step == end:
          save(step, state)
        if epoch_end:
          t_mark = time.time()
        if stopping or stop.requested:
          save(step, state)
          interrupted = True
          break
      if bar is not None:
        bar.close()
      if interrupted:
        break
  ckpt.wait()
  if interrupted:
    print(f'Stopped at step {step}; checkpoint saved. Run the same command again to resume.', flush=True)
    return {'interrupted': True, 'step': step}
  if final_evals is None:  # Rerun of a finished group: the final evaluations are in the histories.
    done = [[r for r in h if r.get('kind') == 'eval' and r['step'] == setup.total_steps
             and 'ece' in r] for h in histories]
    if all(done):
      final_evals = [{k: v for k, v in d[-1].items() if k not in ('step', 'kind', 'time')}
                     for d in done]
    else:
      final_evals = [{**r, 'epoch': setup.total_steps / spe, 'stage': len(setup.stages) - 1}
                     for r in evaluator(state, final=True)]
  if str(step) not in totals[0].by_step:
    record_totals(step, with_epoch=False)
  runs = []
  for k, (c, d) in enumerate(zip(cfgs, dirs)):
    acc = totals[k].at(step)
    res = loop._results(c, setup, histories[k], final_evals[k], acc['wall_time_sec'],
                        acc['train_images'] / acc['train_time_sec'] if acc['train_time_sec'] > 0
                        else None)
    res['train_time_sec'] = acc['train_time_sec']
    res['train_images'] = int(acc['train_images'])
    seed_state = unstack(state, k)
    res['params'] = loop._param_counts(setup, seed_state)
    # Each seed's images per second is the group's divided by the number of seeds.
    res['group'] = {'workdir': os.path.abspath(workdir), 'index': k, 'seeds': seeds}
    res = workdir_lib.strict_json(res)
    workdir_lib.write_atomic(os.path.join(d, 'results.json'),
                             json.dumps(res, indent=2, allow_nan=False))
    # The seed's final state as its own checkpoint: eval, export, analyze and
    # teacher.checkpoint read a seed directory like any run's.
    seed_ckpt = ckpt_lib.Checkpointer(os.path.join(d, 'checkpoints'), keep=cfg.keep_checkpoints)
    seed_ckpt.save(step, seed_state)
    seed_ckpt.close()
    runs.append(res)
  return {'num_seeds': n_seeds, 'seeds': seeds, 'workdirs': dirs, 'runs': runs}
