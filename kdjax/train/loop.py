"""`train_and_evaluate(config, workdir)`: the training loop around the pure step.

Synopsis:
  value checks -> lock the workdir and check it holds this config's run
  (`kdjax.train.workdir`) -> setup (all checks, no compile) -> resume from the
  workdir's newest readable checkpoint -> for each stage: build the optimizer and step, jit it over the
  data-parallel mesh, run, evaluate every `eval_every_epochs`, checkpoint every
  `checkpoint_every_epochs` and at stage ends -> results.json.

  Resume is exact: data order, augmentation and stochastic-depth masks derive
  from (seed, step), and metrics newer than the restored step are dropped (the
  TensorBoard files are rewritten from metrics.jsonl). Wall time, training
  time and images accumulate over resumed processes (totals.json), so
  results.json is the same however often the run was interrupted.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from kdjax import config as config_lib
from kdjax.train import checkpoint as ckpt_lib
from kdjax.train import inputs, metrics as metrics_lib, optim, setup as setup_lib, step as step_lib
from kdjax.train import workdir as workdir_lib


class NonFiniteLossError(FloatingPointError):
  pass


def restore(setup, ckpt, variables, all_unreadable_aside: bool = False):
  """(step, state) from the newest readable checkpoint, or None.

  The abstract target carries the optimizer state of the stage that runs the
  newest checkpoint's step and replicated shardings, so a checkpoint written
  on any device count restores onto this one.
  """
  steps = ckpt.steps()
  if not steps:
    return None
  repl = setup_lib.replicated(setup.mesh)
  tx, _ = optim.stage_tx(setup, setup.stage_of(steps[-1]), variables['params'])
  abstract = jax.eval_shape(lambda v: {**v, 'opt': tx.init(v['params'])}, variables)
  abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=repl), abstract)
  return ckpt.restore_latest(abstract, all_unreadable_aside)


def compile_stage(setup, stage_idx, tx, batch_fn, steps: int = 1, dispatch_loop: bool | None = None):
  """The jitted train step of one stage over the data-parallel mesh.

  With `steps` = k > 1 (or `dispatch_loop`) the program is `fn(state, teacher_vars, data, n)`: a
  loop of n <= k steps in one dispatch (n is a runtime argument, so one
  compiled body serves full and partial dispatches); every metric gets a
  leading [k] axis of which the first n rows are filled. Each step derives
  its batch and keys from the state's step counter, so n steps in one
  dispatch are bit-identical to n dispatches of one step of this program.
  """
  cfg, st = setup.config, setup.stages[stage_idx]
  repl = setup_lib.replicated(setup.mesh)
  scfg = step_lib.StepConfig(seed=cfg.seed, steps_per_epoch=setup.steps_per_epoch,
                             stage_start_step=setup.stage_bounds[stage_idx][0],
                             stage_epochs=float(st.epochs), ce_weight=float(st.distill.ce_weight),
                             num_classes=setup.dataset.num_classes)
  fn = step_lib.make_train_step(student=setup.student,
                                teacher=setup.teacher.model if setup.teacher else None,
                                terms=setup.stage_terms[stage_idx], tx=tx, batch_fn=batch_fn,
                                cfg=scfg, batch_sharding=setup_lib.data_sharded(setup.mesh))
  if dispatch_loop or (dispatch_loop is None and steps > 1):
    single = fn

    def fn(state, teacher_vars, data, n):
      _, m_shape = jax.eval_shape(single, state, teacher_vars, data)
      buf = jax.tree.map(lambda a: jnp.zeros((steps,) + a.shape, a.dtype), m_shape)

      def body(i, carry):
        s, b = carry
        s, m = single(s, teacher_vars, data)
        return s, jax.tree.map(lambda x, y: x.at[i].set(y), b, m)
      return jax.lax.fori_loop(0, n, body, (state, buf))
  # The state is donated (updated in place); the teacher and the data are not.
  return jax.jit(fn, donate_argnums=(0,), out_shardings=(repl, repl))


def _dispatcher(setup, stage_idx, tx, batch_fn, k: int):
  """`fn(state, teacher_vars, data, n)` running n <= k steps, metrics with a leading [k] axis."""
  if k > 1:
    return compile_stage(setup, stage_idx, tx, batch_fn, steps=k, dispatch_loop=True)
  single = compile_stage(setup, stage_idx, tx, batch_fn)

  def one_step(state, teacher_vars, data, n):
    del n  # always 1
    state, m = single(state, teacher_vars, data)
    return state, jax.tree.map(lambda x: x[None], m)
  return one_step


def steps_per_dispatch(cfg, dataset) -> int:
  """cfg.steps_per_dispatch, checked: an integer >= 1, > 1 only for in-memory data."""
  k = cfg.get('steps_per_dispatch', 1)
  if isinstance(k, bool) or not isinstance(k, int) or k < 1:
    raise ValueError(f'steps_per_dispatch must be an integer >= 1, got {k!r}.')
  if k > 1 and not dataset.in_memory:
    raise ValueError(f'steps_per_dispatch={k} needs an in-memory dataset ({dataset.name!r} is '
                     f'streamed from the host one batch per step); set it to 1.')
  return k


def _unstack(entries):
  """(step, metrics) per step; a scanned dispatch (step, stacked metrics, n) gives n of them."""
  out = []
  for e in entries:
    if len(e) == 2:
      out.append(e)
    else:
      first, m, n = e
      out.extend((first + i, {k: v[i] for k, v in m.items()}) for i in range(n))
  return out


def fresh_state(setup, variables):
  """A replicated train state from `init_variables`, with the first stage's optimizer."""
  tx, _ = optim.stage_tx(setup, 0, variables['params'])
  return jax.device_put({**variables, 'opt': tx.init(variables['params'])},
                        setup_lib.replicated(setup.mesh))


class Evaluator:
  """Evaluates the student (and caches the teacher's logits) on the test split."""

  def __init__(self, setup):
    self.setup = setup
    ds = setup.dataset
    self.repl = setup_lib.replicated(setup.mesh)
    self.shard = setup_lib.data_sharded(setup.mesh)
    bs = setup.config.eval_batch_size
    bs = max(jax.device_count(), bs - bs % jax.device_count())
    self.batch_size = bs
    self.fn = jax.jit(step_lib.make_eval_fn(setup.student, setup.survival),
                      in_shardings=(self.repl, self.repl, self.shard), out_shardings=self.repl)
    self.teacher_logits = None
    if setup.teacher is not None:
      tfn = jax.jit(step_lib.make_eval_fn(setup.teacher.model),
                    in_shardings=(self.repl, self.repl, self.shard), out_shardings=self.repl)
      tv = inputs.replicate(setup.teacher.variables, self.repl)
      self.teacher_logits = self._logits(lambda x: tfn(tv['params'], tv['batch_stats'], x))['logits']
    self.labels = np.asarray(ds.test_labels) if ds.in_memory else None

  def _logits(self, fn) -> dict[str, np.ndarray]:
    ds, out, labels = self.setup.dataset, [], []
    if ds.in_memory:
      for x, y, valid in inputs.eval_batches(ds.test_images, ds.test_labels, self.batch_size):
        x = inputs.global_batch_to_devices(inputs.normalize_host(x, ds), self.shard)
        out.append({k: np.asarray(v)[:valid] for k, v in fn(x).items()})
    else:
      for batch in ds.test_stream(self.batch_size):
        # Test streams are per host: the logits come back in process order.
        x = inputs.host_batch_to_global(inputs.normalize_host(batch['image'], ds), self.shard)
        mask = inputs.gather_host_rows(batch['mask'])
        out.append({k: np.asarray(v)[mask] for k, v in fn(x).items()})
        labels.append(inputs.gather_host_rows(batch['label'])[mask])
      self.labels = np.concatenate(labels)
    return {k: np.concatenate([o[k] for o in out]) for k in out[0]}

  def __call__(self, state, final: bool = False) -> dict[str, float]:
    params, bs = state['params']['student'], state['batch_stats']
    return self.metrics(self._logits(lambda x: self.fn(params, bs, x)), final)

  def metrics(self, outputs: dict[str, np.ndarray], final: bool = False) -> dict[str, float]:
    """Metrics of test-split outputs {name: logits}, the student's under 'logits'."""
    outputs = dict(outputs)
    logits = outputs.pop('logits')
    res = metrics_lib.classification_metrics(logits, self.labels)
    if self.teacher_logits is not None:
      res.update(metrics_lib.agreement_metrics(logits, self.teacher_logits))
    if final:
      res['ece'] = metrics_lib.expected_calibration_error(logits, self.labels, 15)
      res['aurc'] = metrics_lib.aurc(logits, self.labels)
    for name, extra in outputs.items():  # cohort members, ONE branches, ensembles
      prefix = name[:-len('/logits')]
      res.update({f'{prefix}/{k}': v for k, v in
                  metrics_lib.classification_metrics(extra, self.labels).items()})
    return res


def _check_finite(pending, terms_of_stage):
  """Raises NonFiniteLossError naming the first bad step and its loss terms."""
  if not pending:
    return []
  host = _unstack(jax.device_get(pending))
  for step, m in host:
    if not math.isfinite(float(m['loss/total'])):
      terms = {k: float(v) for k, v in m.items() if k.startswith('loss/')}
      raise NonFiniteLossError(
          f'non-finite loss at step {step}: {terms}. The state was not updated on that step and the '
          f'last checkpoint is intact. Lower the learning rate or the weight of the exploding term '
          f'(terms in this stage: {[t.name for t in terms_of_stage]}).')
  return host


def _absolute_teacher(cfg) -> None:
  """Stores the teacher path absolute, so the workdir works from any directory."""
  if cfg.teacher.checkpoint:
    cfg.teacher.checkpoint = os.path.abspath(os.path.expanduser(cfg.teacher.checkpoint))


def _close_quietly(*things) -> None:
  for t in things:
    try:
      t.close()
    except Exception:  # already failing: the first error is the one to report
      pass


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
  from kdjax.train import multiseed  # seeds in parallel: one vmapped program, its own loop
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
    if group:
      return multiseed.train(cfg, setup, workdir, t_start, stop_after_steps, on_config_change)
    return _train(cfg, setup, workdir, t_start, stop_after_steps, on_config_change)
  finally:
    if lock is not None:
      lock.release()


def _train(cfg, setup, workdir, t_start, stop_after_steps, on_config_change):
  is_main = jax.process_index() == 0
  os.makedirs(workdir, exist_ok=True)
  ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, 'checkpoints'), keep=cfg.keep_checkpoints,
                               repair=is_main)
  writer = metrics_lib.MetricWriter(workdir, enabled=is_main)
  try:
    return _train_loop(cfg, setup, workdir, t_start, stop_after_steps, on_config_change, ckpt, writer)
  finally:
    _close_quietly(ckpt, writer)


def _train_loop(cfg, setup, workdir, t_start, stop_after_steps, on_config_change, ckpt, writer):
  is_main = jax.process_index() == 0
  repl = setup_lib.replicated(setup.mesh)
  totals = workdir_lib.Totals(workdir, enabled=is_main)

  # Resume: the abstract state of the stage that runs the checkpoint's step.
  variables = setup_lib.init_variables(setup)
  had_checkpoints = bool(ckpt.steps())
  # The workdir's config is this run's (checked), so unreadable checkpoints are
  # corrupt, not another model's, unless the config was allowed to change.
  restored = restore(setup, ckpt, variables, all_unreadable_aside=on_config_change != 'continue')
  if restored is None:
    if had_checkpoints and on_config_change == 'continue':
      raise ValueError(f'no checkpoint in {workdir} fits the new config (the model or its '
                       f'auxiliary modules changed); use --force_new to start a new run instead.')
    state = fresh_state(setup, variables)
    history = writer.truncate_after(-1)
    base = totals.at(-1)
  else:
    restored_step, state = restored
    print(f'Resuming from checkpoint step {restored_step} in {workdir}.', flush=True)
    history = writer.truncate_after(restored_step)
    base = totals.at(restored_step)

  evaluator = Evaluator(setup)
  ds = setup.dataset
  data_shard = setup_lib.data_sharded(setup.mesh)
  if ds.in_memory:
    device_data = jax.device_put({'image': ds.train_images, 'label': ds.train_labels.astype(np.int32)},
                                 repl)
  teacher_vars = setup.teacher.variables if setup.teacher else {}
  teacher_vars = inputs.replicate(teacher_vars, repl)

  spe = setup.steps_per_epoch
  total_epochs = setup.total_steps / spe
  run_name = os.path.basename(os.path.abspath(workdir))
  step = int(state['step'])
  images_seen, train_time = 0, 0.0
  interrupted = False
  final_eval = None
  # Sums of the train metrics over the epoch in progress (restored mid-epoch).
  epoch_sums, epoch_count = totals.partial_epoch(step) if restored is not None else ({}, 0)

  def current_totals():
    return {'wall_time_sec': base['wall_time_sec'] + time.time() - t_start,
            'train_time_sec': base['train_time_sec'] + train_time,
            'train_images': base['train_images'] + images_seen}

  def save(step, state):
    totals.record(step, current_totals(), epoch_sums, epoch_count)
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
      if ds.in_memory:
        batch_fn = inputs.in_memory_batch_fn(ds, cfg.data, seed=cfg.seed, batch_size=batch_size,
                                             steps_per_epoch=spe)
        data_iter = None
      else:
        batch_fn = inputs.streamed_batch_fn(ds)
        data_iter = iter(ds.train_stream(cfg.seed, step, batch_size))
      k = steps_per_dispatch(cfg, ds)
      # k > 1: every dispatch runs one compiled loop body, so runs with any k > 1 are
      # bit-identical. k = 1 runs the plain step (it fuses differently, so it equals
      # the loop to float32 rounding): a LAPACK call (KDSVD's SVD) inside the loop
      # body was seen to deadlock XLA's CPU runtime, and the plain step is what every
      # method was validated with.
      multi_step = _dispatcher(setup, stage_idx, tx, batch_fn, k)
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
        if (sum(e[2] if len(e) == 3 else 1 for e in pending) >= cfg.log_every_steps
            or epoch_end or step == end or stopping):
          host = _check_finite(pending, terms)  # blocks until these steps are done
          ckpt.check()  # a failed asynchronous save stops the run here
          pending = []
          now = time.time()
          train_time += now - t_mark
          images_seen += timed_steps * batch_size
          t_mark, timed_steps = now, 0
          for _, hm in host:
            w = int(hm.get('valid_rows', 1))  # masked last batch: steps weigh their valid rows
            for name, value in hm.items():
              epoch_sums[name] = epoch_sums.get(name, 0.0) + w * float(value)
            epoch_count += w
          last_step, last = host[-1]
          if is_main:
            writer.write(last_step + 1, 'train', {**{k: float(v) for k, v in last.items()},
                                                  'learning_rate': float(schedule(last_step - start))})
        epochs_done = (step - start) / spe
        if epoch_end and epoch_count:
          if is_main:
            writer.write(step, 'train_epoch', {'epoch': step / spe, **{
                k: v / epoch_count for k, v in epoch_sums.items()}})
          epoch_sums, epoch_count = {}, 0
        if epoch_end and (round(epochs_done) % cfg.eval_every_epochs == 0 or step == end):
          res = evaluator(state, final=(step == setup.total_steps))
          res['epoch'] = step / spe
          res['stage'] = stage_idx
          writer.write(step, 'eval', res)
          history.append({'step': step, 'kind': 'eval', **res})
          if step == setup.total_steps:
            final_eval = res
          # Seconds per epoch of steady-state training since the last evaluation.
          d_time, d_images = train_time - at_eval[0], images_seen - at_eval[1]
          at_eval = (train_time, images_seen)
          if is_main:
            _print_eval(bar, st.name if len(setup.stages) > 1 else '', res, total_epochs,
                        d_time * spe * batch_size / d_images if d_images else None)
        if step == end and stage_idx + 1 < len(setup.stages):
          # Save the next stage's fresh optimizer state so a checkpoint at a
          # boundary always matches the stage that runs its step.
          ntx, _ = optim.stage_tx(setup, stage_idx + 1, state['params'])
          state = {**state, 'opt': jax.jit(ntx.init, out_shardings=repl)(state['params'])}
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
  if final_eval is None:  # Rerun of a finished run: the final evaluation is in the history.
    done = [r for r in history if r.get('kind') == 'eval' and r['step'] == setup.total_steps
            and 'ece' in r]
    if done:
      final_eval = {k: v for k, v in done[-1].items() if k not in ('step', 'kind', 'time')}
    else:
      final_eval = {**evaluator(state, final=True), 'epoch': total_epochs,
                    'stage': len(setup.stages) - 1}
  if step not in [int(s) for s in totals.by_step]:
    totals.record(step, current_totals())
  acc = totals.at(step)
  results = _results(cfg, setup, history, final_eval, acc['wall_time_sec'],
                     acc['train_images'] / acc['train_time_sec'] if acc['train_time_sec'] > 0 else None)
  results['train_time_sec'] = acc['train_time_sec']
  results['train_images'] = int(acc['train_images'])
  results['params'] = _param_counts(setup, state)
  results = workdir_lib.strict_json(results)
  if is_main:
    workdir_lib.write_atomic(os.path.join(workdir, 'results.json'),
                             json.dumps(results, indent=2, allow_nan=False))
  return results


def _param_counts(setup, state) -> dict[str, int]:
  count = lambda tree: int(sum(np.prod(a.shape) for a in jax.tree.leaves(tree)))
  return {'student': count(state['params']['student']),
          'teacher': count(setup.teacher.variables['params']) if setup.teacher else 0,
          'aux': count(state['params']['aux'])}


def eval_line(stage: str, res: dict, total_epochs: float, sec_per_epoch: float | None) -> str:
  """`epoch 5/15  top1 0.9611  loss 0.142  agree 0.97  12.3 s/epoch` (one line per evaluation)."""
  parts = [f'{stage + "  " if stage else ""}epoch {res["epoch"]:g}/{total_epochs:g}',
           f'top1 {res["top1"]:.4f}', f'loss {res["loss"]:.3f}']
  if 'teacher_agreement' in res:
    parts.append(f'agree {res["teacher_agreement"]:.2f}')
  if sec_per_epoch is not None:
    parts.append(f'{sec_per_epoch:.1f} s/epoch')
  return '  '.join(parts)


def _print_eval(bar, stage, res, total_epochs, sec_per_epoch):
  line = eval_line(stage, res, total_epochs, sec_per_epoch)
  if bar is not None:
    bar.set_postfix(top1=f'{res["top1"]:.4f}')
    bar.write(line)
  else:
    print(line, flush=True)


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


def evaluate_workdir(workdir: str) -> dict[str, Any]:
  """See `kdjax.train.export.evaluate_workdir`."""
  from kdjax.train import export
  return export.evaluate_workdir(workdir)


def export_student(workdir: str, output: str) -> dict[str, Any]:
  """See `kdjax.train.export.export_student`."""
  from kdjax.train import export
  return export.export_student(workdir, output)
