"""The training driver: one loop for a single run and for a group of seeds trained together.

Synopsis:
  `run(runner, cfg, setup, workdir, ...)` resumes from the workdir's newest
  readable checkpoint, then for each stage builds the optimizer and the
  runner's compiled program, dispatches k = `steps_per_dispatch` steps at a
  time, checks the losses are finite at each host sync, logs train records
  and epoch means, evaluates every `eval_every_epochs`, checkpoints every
  `checkpoint_every_epochs` and at stage ends, and writes results.json.

  A `Runner` holds what differs between a single run (`loop.SingleRun`) and
  seeds vmapped in one program (`multiseed.SeedGroup`). Both have members, the
  runs whose records are written: the run itself (its workdir) or each seed
  (WORKDIR/seed<k>). A member has its own metrics.jsonl, totals.json and
  results.json; the checkpoints under WORKDIR/checkpoints are the runner's
  state (stacked over seeds for a group).

  Resume is exact: data order, augmentation and stochastic-depth masks derive
  from (seed, step), and metrics newer than the restored step are dropped (the
  TensorBoard files are rewritten from metrics.jsonl). Wall time, training
  time and images accumulate over resumed processes (totals.json), so
  results.json is the same however often the run was interrupted. Only
  process 0 writes files.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import jax
import numpy as np

from kdjax import config as config_lib
from kdjax.train import checkpoint as ckpt_lib, dispatch, inputs, metrics as metrics_lib, optim
from kdjax.train import setup as setup_lib, workdir as workdir_lib


class Runner:
  """What a single run and a seed group do differently; `run` drives either.

  Attributes: `dirs` and `cfgs` (each member's directory and config),
  `members` (names for the non-finite message; None for a single run),
  `resuming` (what the resume line names, e.g. '3 seeds ') and `what_changed`
  (what a config change may have altered, for the "no checkpoint fits" error).
  """
  dirs: list[str]
  cfgs: list[Any]
  members: list[str] | None = None
  resuming: str = ''
  what_changed: str = 'the model or its auxiliary modules'

  def make_dirs(self) -> None:
    """Creates the members' directories; `run` calls it, so a runner built without a
    workdir (kdjax bench) writes nothing."""
    for d in self.dirs:
      os.makedirs(d, exist_ok=True)

  def init_variables(self):
    """The fresh variables (the abstract target of a restore)."""
    raise NotImplementedError

  def restore(self, ckpt, variables, all_unreadable_aside: bool):
    """(step, state) from the newest readable checkpoint, or None."""
    raise NotImplementedError

  def fresh_state(self, variables):
    raise NotImplementedError

  def opt_init(self, tx):
    """The un-jitted init of `tx`'s state for the state's params."""
    raise NotImplementedError

  def step_of(self, state) -> int:
    raise NotImplementedError

  def compile(self, stage_idx: int, tx, k: int):
    """`fn(state, teacher_vars, data, n)`: n <= k steps, metrics with a leading [k] axis."""
    raise NotImplementedError

  def split(self, metrics) -> list[dict[str, float]]:
    """One step's host metrics as {name: float}, one dict a member."""
    raise NotImplementedError

  def evaluator(self):
    """`evaluate(state, final) -> [metrics]`, one dict a member."""
    raise NotImplementedError

  def show_eval(self, bar, stage: str, evals, total_epochs: float, sec_per_epoch) -> None:
    """Shows an evaluation on the console (process 0)."""

  def member_state(self, state, k: int):
    raise NotImplementedError

  def extra_results(self, k: int) -> dict[str, Any]:
    """Keys added to member k's results.json."""
    return {}

  def member_done(self, k: int, step: int, state) -> None:
    """Called after member k's results.json is written, with its final state."""

  def outcome(self, runs: list[dict]):
    """What `train_and_evaluate` returns, given each member's results."""
    raise NotImplementedError


def close_quietly(*things) -> None:
  for t in things:
    try:
      t.close()
    except Exception:  # already failing: the first error is the one to report
      pass


def run(runner: Runner, cfg, setup, workdir: str, t_start: float,
        stop_after_steps: int | None = None, on_config_change: str = 'error'):
  """Trains per `cfg` in the locked and claimed `workdir`; returns `runner.outcome(...)`."""
  is_main = jax.process_index() == 0
  runner.make_dirs()
  ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, 'checkpoints'), keep=cfg.keep_checkpoints,
                               repair=is_main)
  writers = [metrics_lib.MetricWriter(d, enabled=is_main) for d in runner.dirs]
  try:
    return _train_loop(runner, cfg, setup, workdir, t_start, stop_after_steps, on_config_change,
                       ckpt, writers)
  finally:
    close_quietly(ckpt, *writers)


def _train_loop(runner, cfg, setup, workdir, t_start, stop_after_steps, on_config_change, ckpt,
                writers):
  is_main = jax.process_index() == 0
  repl = setup_lib.replicated(setup.mesh)
  totals = [workdir_lib.Totals(d, enabled=is_main) for d in runner.dirs]

  # Resume: the abstract state of the stage that runs the checkpoint's step.
  variables = runner.init_variables()
  had_checkpoints = bool(ckpt.steps())
  # The workdir's config is this run's (checked), so unreadable checkpoints are
  # corrupt, not another model's, unless the config was allowed to change.
  restored = runner.restore(ckpt, variables, all_unreadable_aside=on_config_change != 'continue')
  if restored is None:
    if had_checkpoints and on_config_change == 'continue':
      raise ValueError(f'no checkpoint in {workdir} fits the new config ({runner.what_changed} '
                       f'changed); use --force_new to start a new run instead.')
    state, restored_step = runner.fresh_state(variables), -1
  else:
    restored_step, state = restored
    print(f'Resuming {runner.resuming}from checkpoint step {restored_step} in {workdir}.',
          flush=True)
  histories = [w.truncate_after(restored_step) for w in writers]
  bases = [t.at(restored_step) for t in totals]

  evaluate = runner.evaluator()
  ds = setup.dataset
  data_shard = setup_lib.data_sharded(setup.mesh)
  if ds.in_memory:
    device_data = jax.device_put({'image': ds.train_images, 'label': ds.train_labels.astype(np.int32)},
                                 repl)
  teacher_vars = inputs.replicate(setup.teacher.variables if setup.teacher else {}, repl)

  spe = setup.steps_per_epoch
  total_epochs = setup.total_steps / spe
  run_name = os.path.basename(os.path.abspath(workdir))
  step = runner.step_of(state)
  images_seen, train_time = 0, 0.0  # per member: the members train in lockstep
  interrupted = False
  final_evals = None
  # Sums of the train metrics over the epoch in progress (restored mid-epoch).
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
      data_iter = None if ds.in_memory else iter(ds.train_stream(cfg.seed, step, batch_size))
      k = dispatch.steps_per_dispatch(cfg, ds)
      # k > 1: every dispatch runs one compiled loop body, so runs with any k > 1 are
      # bit-identical. k = 1 runs the plain step (it fuses differently, so it equals
      # the loop to float32 rounding): a LAPACK call (KDSVD's SVD) inside the loop
      # body was seen to deadlock XLA's CPU runtime, and the plain step is what every
      # method was validated with.
      multi_step = runner.compile(stage_idx, tx, k)
      pending = []
      bar = None
      at_eval = (train_time, images_seen)
      # Throughput counts only steady-state steps: the clock starts after the
      # first (compiling) step and is banked at each host sync, before any
      # evaluation or checkpoint work.
      t_mark, timed_steps = None, 0
      while step < end:
        if ds.in_memory:
          data = device_data
        else:  # this process's rows of the global batch
          data = inputs.host_batch_to_global(next(data_iter), data_shard)
        # k steps in one dispatch unless that would cross an epoch end (evaluation,
        # checkpoint) or the requested stop; a shorter dispatch fills the remainder.
        limit = min(end, start + ((step - start) // spe + 1) * spe)
        if stop_after_steps is not None and stop_after_steps > step:
          limit = min(limit, stop_after_steps)
        n = min(k, limit - step)
        state, m = multi_step(state, teacher_vars, data, np.int32(n))
        pending.append((step, m, n))
        step += n
        if t_mark is None:
          jax.block_until_ready(m)
          t_mark = time.time()
          # The bar starts after the compile so its rate and ETA are steady-state.
          bar = _progress(cfg, run_name, st, start, end, step)
        else:
          timed_steps += n
          if bar is not None:
            bar.update(n)
        epoch_end = (step - start) % spe == 0
        stopping = stop.requested or (stop_after_steps is not None and step >= stop_after_steps)
        if (sum(e[2] for e in pending) >= cfg.log_every_steps or epoch_end or step == end
            or stopping):
          # Blocks until these steps are done.
          host = dispatch.check_finite(pending, terms, runner.members)
          ckpt.check()  # a failed asynchronous save stops the run here
          pending = []
          now = time.time()
          train_time += now - t_mark
          images_seen += timed_steps * batch_size
          t_mark, timed_steps = now, 0
          for _, hm in host:
            split = runner.split(hm)
            w = int(split[0].get('valid_rows', 1))  # masked last batch: steps weigh their rows
            for sums, values in zip(epoch_sums, split):
              for name, value in values.items():
                sums[name] = sums.get(name, 0.0) + w * value
            epoch_count += w
          last_step, last = host[-1]
          lr = float(schedule(last_step - start))
          for w, values in zip(writers, runner.split(last)):
            w.write(last_step + 1, 'train', {**values, 'learning_rate': lr})
        epochs_done = (step - start) / spe
        if epoch_end and epoch_count:
          for w, sums in zip(writers, epoch_sums):
            w.write(step, 'train_epoch', {'epoch': step / spe, **{
                name: v / epoch_count for name, v in sums.items()}})
          epoch_sums, epoch_count = [{} for _ in writers], 0
        if epoch_end and (round(epochs_done) % cfg.eval_every_epochs == 0 or step == end):
          evals = evaluate(state, final=(step == setup.total_steps))
          for res, w, history in zip(evals, writers, histories):
            res['epoch'] = step / spe
            res['stage'] = stage_idx
            w.write(step, 'eval', res)
            history.append({'step': step, 'kind': 'eval', **res})
          if step == setup.total_steps:
            final_evals = evals
          # Seconds per epoch of steady-state training since the last evaluation.
          d_time, d_images = train_time - at_eval[0], images_seen - at_eval[1]
          at_eval = (train_time, images_seen)
          if is_main:
            runner.show_eval(bar, st.name if len(setup.stages) > 1 else '', evals, total_epochs,
                             d_time * spe * batch_size / d_images if d_images else None)
        if step == end and stage_idx + 1 < len(setup.stages):
          # Save the next stage's fresh optimizer state so a checkpoint at a
          # boundary always matches the stage that runs its step.
          ntx, _ = optim.stage_tx(setup, stage_idx + 1, state['params'])
          state = {**state, 'opt': jax.jit(runner.opt_init(ntx), out_shardings=repl)(state['params'])}
        if (epoch_end and round(epochs_done) % cfg.checkpoint_every_epochs == 0) or step == end:
          save(step, state)
        if epoch_end:
          t_mark = time.time()  # evaluation and checkpointing are not training time
        if stopping or stop.requested:
          save(step, state)
          interrupted = True
          break
      if bar is not None:
        bar.close()
      if interrupted:
        break
  ckpt.wait()  # a failed last save is reported before results are written
  if interrupted:
    print(f'Stopped at step {step}; checkpoint saved. Run the same command again to resume.', flush=True)
    return {'interrupted': True, 'step': step}
  if final_evals is None:  # Rerun of a finished run: the final evaluations are in the histories.
    done = [[r for r in h if r.get('kind') == 'eval' and r['step'] == setup.total_steps
             and 'ece' in r] for h in histories]
    if all(done):
      final_evals = [{k: v for k, v in d[-1].items() if k not in ('step', 'kind', 'time')}
                     for d in done]
    else:
      final_evals = [{**r, 'epoch': total_epochs, 'stage': len(setup.stages) - 1}
                     for r in evaluate(state, final=True)]
  if str(step) not in totals[0].by_step:
    record_totals(step, with_epoch=False)
  runs = []
  for k, (c, d) in enumerate(zip(runner.cfgs, runner.dirs)):
    acc = totals[k].at(step)
    res = _results(c, setup, histories[k], final_evals[k], acc['wall_time_sec'],
                   acc['train_images'] / acc['train_time_sec'] if acc['train_time_sec'] > 0 else None)
    res['train_time_sec'] = acc['train_time_sec']
    res['train_images'] = int(acc['train_images'])
    member = runner.member_state(state, k)
    res['params'] = _param_counts(setup, member)
    res.update(runner.extra_results(k))
    res = workdir_lib.strict_json(res)
    if is_main:
      workdir_lib.write_atomic(os.path.join(d, 'results.json'),
                               json.dumps(res, indent=2, allow_nan=False))
    runner.member_done(k, step, member)
    runs.append(res)
  return runner.outcome(runs)


def _param_counts(setup, state) -> dict[str, int]:
  count = lambda tree: int(sum(np.prod(a.shape) for a in jax.tree.leaves(tree)))
  return {'student': count(state['params']['student']),
          'teacher': count(setup.teacher.variables['params']) if setup.teacher else 0,
          'aux': count(state['params']['aux'])}


def _progress(cfg, run_name, st, start, end, step):
  if not cfg.progress_bar or jax.process_index() != 0:
    return None
  from tqdm.auto import tqdm
  return tqdm(total=end - start, initial=step - start, desc=f'{run_name} [{st.name}]', unit='step',
              dynamic_ncols=True, leave=True, mininterval=1.0)


def _results(cfg, setup, history, final_eval, wall, images_per_sec) -> dict[str, Any]:
  last_stage = len(setup.stages) - 1
  evals = [r for r in history if r.get('kind') == 'eval' and int(r.get('stage', last_stage)) == last_stage]
  best = max(evals, key=lambda r: r['top1']) if evals else final_eval
  return {
      'final': {k: v for k, v in final_eval.items() if k not in ('stage',)},
      'best': {'top1': best['top1'], 'top5': best.get('top5'), 'epoch': best.get('epoch')},
      'seed': cfg.seed,
      'model': cfg.model.name,
      'teacher': setup.teacher.arch if setup.teacher else None,
      'teacher_checkpoint_hash': setup.teacher.hash if setup.teacher else None,
      'init_from': ({'workdir': setup.init_from.workdir, 'step': setup.init_from.step,
                     'checkpoint_hash': setup.init_from.hash} if setup.init_from else None),
      'methods': sorted({t.method for terms in setup.stage_terms for t in terms}),
      'config_hash': config_lib.config_hash(cfg),
      'wall_time_sec': wall,
      'train_images_per_sec': images_per_sec,
      'devices': jax.device_count(),
      'platform': jax.default_backend(),
  }
