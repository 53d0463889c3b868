"""`train_and_evaluate(config, workdir)`: the training loop around the pure step.

Synopsis:
  setup (all checks, no compile) -> resume from the workdir's newest readable
  checkpoint -> for each stage: build the optimizer and step, jit it over the
  data-parallel mesh, run, evaluate every `eval_every_epochs`, checkpoint every
  `checkpoint_every_epochs` and at stage ends -> results.json.

  Resume is exact: data order, augmentation and stochastic-depth masks derive
  from (seed, step), and metrics newer than the restored step are dropped.
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


class NonFiniteLossError(FloatingPointError):
  pass


def restore(setup, ckpt, variables):
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
  return ckpt.restore_latest(abstract)


def compile_stage(setup, stage_idx, tx, batch_fn):
  """The jitted train step of one stage over the data-parallel mesh."""
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
  # The state is donated (updated in place); the teacher and the data are not.
  return jax.jit(fn, donate_argnums=(0,), out_shardings=(repl, repl))


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
      tv = setup.teacher.variables
      self.teacher_logits = self._logits(lambda x: tfn(tv['params'], tv['batch_stats'], x))['logits']
    self.labels = np.asarray(ds.test_labels) if ds.in_memory else None

  def _logits(self, fn) -> dict[str, np.ndarray]:
    ds, out, labels = self.setup.dataset, [], []
    if ds.in_memory:
      for x, y, valid in inputs.eval_batches(ds.test_images, ds.test_labels, self.batch_size):
        x = jax.device_put(inputs.normalize_host(x, ds), self.shard)
        out.append({k: np.asarray(v)[:valid] for k, v in fn(x).items()})
    else:
      for batch in ds.test_stream(self.batch_size):
        x = jax.device_put(inputs.normalize_host(batch['image'], ds), self.shard)
        mask = np.asarray(batch['mask'])
        out.append({k: np.asarray(v)[mask] for k, v in fn(x).items()})
        labels.append(np.asarray(batch['label'])[mask])
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
  host = jax.device_get(pending)
  for step, m in host:
    if not math.isfinite(float(m['loss/total'])):
      terms = {k: float(v) for k, v in m.items() if k.startswith('loss/')}
      raise NonFiniteLossError(
          f'non-finite loss at step {step}: {terms}. The state was not updated on that step and the '
          f'last checkpoint is intact. Lower the learning rate or the weight of the exploding term '
          f'(terms in this stage: {[t.name for t in terms_of_stage]}).')
  return host


def train_and_evaluate(cfg, workdir: str, *, stop_after_steps: int | None = None) -> dict[str, Any]:
  """Trains (or distils) per `cfg` in `workdir`; returns the results dict.

  `stop_after_steps` stops (with a checkpoint, as SIGTERM does) once the
  global step reaches it; tests use it to simulate an interruption.
  """
  from kdjax.train import multiseed  # seeds in parallel: one vmapped program, its own loop
  if multiseed.is_group(cfg):
    return multiseed.train_and_evaluate(cfg, workdir, stop_after_steps=stop_after_steps)
  t_start = time.time()
  setup = setup_lib.build(cfg)
  os.makedirs(workdir, exist_ok=True)
  is_main = jax.process_index() == 0
  if is_main:
    with open(os.path.join(workdir, 'config.json'), 'w') as f:
      f.write(config_lib.to_json(cfg))
  ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, 'checkpoints'), keep=cfg.keep_checkpoints)
  writer = metrics_lib.MetricWriter(workdir, enabled=is_main)
  repl = setup_lib.replicated(setup.mesh)

  # Resume: the abstract state of the stage that runs the checkpoint's step.
  variables = setup_lib.init_variables(setup)
  restored = restore(setup, ckpt, variables)
  if restored is None:
    state = fresh_state(setup, variables)
    history = writer.truncate_after(-1)
  else:
    restored_step, state = restored
    print(f'Resuming from checkpoint step {restored_step} in {workdir}.', flush=True)
    history = writer.truncate_after(restored_step)

  evaluator = Evaluator(setup)
  ds = setup.dataset
  data_shard = setup_lib.data_sharded(setup.mesh)
  if ds.in_memory:
    device_data = jax.device_put({'image': ds.train_images, 'label': ds.train_labels.astype(np.int32)},
                                 repl)
  teacher_vars = setup.teacher.variables if setup.teacher else {}
  teacher_vars = jax.device_put(teacher_vars, repl)

  spe = setup.steps_per_epoch
  step = int(state['step'])
  images_seen, train_time = 0, 0.0
  interrupted = False
  final_eval = None
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
      train_step = compile_stage(setup, stage_idx, tx, batch_fn)
      pending = []
      bar = _progress(cfg, stage_idx, st, start, end, step)
      # Throughput counts only steady-state steps: the clock starts after the
      # first (compiling) step and is banked at each host sync, before any
      # evaluation or checkpoint work.
      t_mark, timed_steps = None, 0
      while step < end:
        if ds.in_memory:
          data = device_data
        else:
          data = jax.device_put(next(data_iter), data_shard)
        state, m = train_step(state, teacher_vars, data)
        pending.append((step, m))
        step += 1
        if t_mark is None:
          jax.block_until_ready(m)
          t_mark = time.time()
        else:
          timed_steps += 1
        if bar is not None:
          bar.update(1)
        epoch_end = (step - start) % spe == 0
        if len(pending) >= cfg.log_every_steps or epoch_end or step == end:
          host = _check_finite(pending, terms)  # blocks until these steps are done
          pending = []
          now = time.time()
          train_time += now - t_mark
          images_seen += timed_steps * batch_size
          t_mark, timed_steps = now, 0
          last_step, last = host[-1]
          if is_main:
            writer.write(last_step + 1, 'train', {**{k: float(v) for k, v in last.items()},
                                                  'learning_rate': float(schedule(last_step - start))})
        epochs_done = (step - start) / spe
        if epoch_end and (round(epochs_done) % cfg.eval_every_epochs == 0 or step == end):
          res = evaluator(state, final=(step == setup.total_steps))
          res['epoch'] = step / spe
          res['stage'] = stage_idx
          writer.write(step, 'eval', res)
          history.append({'step': step, 'kind': 'eval', **res})
          if step == setup.total_steps:
            final_eval = res
          if bar is not None:
            bar.set_postfix(top1=f'{res["top1"]:.4f}')
        if step == end and stage_idx + 1 < len(setup.stages):
          # Save the next stage's fresh optimizer state so a checkpoint at a
          # boundary always matches the stage that runs its step.
          ntx, _ = optim.stage_tx(setup, stage_idx + 1, state['params'])
          state = {**state, 'opt': jax.jit(ntx.init, out_shardings=repl)(state['params'])}
        if (epoch_end and round(epochs_done) % cfg.checkpoint_every_epochs == 0) or step == end:
          ckpt.save(step, state)
        if epoch_end:
          t_mark = time.time()  # evaluation and checkpointing are not training time
        if stop.requested or (stop_after_steps is not None and step >= stop_after_steps):
          ckpt.save(step, state)
          interrupted = True
          break
      if bar is not None:
        bar.close()
      if interrupted:
        break
  ckpt.close()
  writer.close()
  if interrupted:
    print(f'Stopped at step {step}; checkpoint saved. Run the same command again to resume.', flush=True)
    return {'interrupted': True, 'step': step}
  if final_eval is None:  # Resumed after the end: re-evaluate the final state.
    final_eval = evaluator(state, final=True)
  results = _results(cfg, setup, history, final_eval, time.time() - t_start,
                     images_seen / train_time if train_time > 0 else float('nan'))
  if is_main:
    with open(os.path.join(workdir, 'results.json'), 'w') as f:
      json.dump(results, f, indent=2)
  return results


def _progress(cfg, stage_idx, st, start, end, step):
  if not cfg.progress_bar or jax.process_index() != 0:
    return None
  from tqdm.auto import tqdm
  return tqdm(total=end - start, initial=step - start, desc=f'{st.name}', unit='step',
              dynamic_ncols=True, leave=False, mininterval=1.0)


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
      'methods': sorted({t.method for terms in setup.stage_terms for t in terms}),
      'config_hash': config_lib.config_hash(cfg),
      'wall_time_sec': wall,
      'train_images_per_sec': images_per_sec,
      'devices': jax.device_count(),
      'platform': jax.default_backend(),
  }


def _restore_workdir(workdir: str):
  """(cfg, setup, step, state) of a finished or interrupted run's newest checkpoint."""
  cfg_path = os.path.join(workdir, 'config.json')
  if not os.path.exists(cfg_path):
    raise FileNotFoundError(f'{workdir!r} is not a kdjax workdir (no config.json).')
  cfg = config_lib.from_json(cfg_path)
  from kdjax.train import multiseed
  multiseed.check_not_group(cfg, workdir)
  setup = setup_lib.build(cfg)
  ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, 'checkpoints'), keep=cfg.keep_checkpoints)
  restored = restore(setup, ckpt, setup_lib.init_variables(setup))
  ckpt.close()
  if restored is None:
    raise FileNotFoundError(f'no readable checkpoint in {workdir}/checkpoints.')
  return (cfg, setup) + tuple(restored)


def evaluate_workdir(workdir: str) -> dict[str, Any]:
  """Re-evaluates the newest readable checkpoint of a run; writes eval.json."""
  _, setup, step, state = _restore_workdir(workdir)
  res = {'step': step, 'epoch': step / setup.steps_per_epoch, **Evaluator(setup)(state, final=True)}
  with open(os.path.join(workdir, 'eval.json'), 'w') as f:
    json.dump(res, f, indent=2)
  return res


def export_student(workdir: str, output: str) -> dict[str, Any]:
  """Writes the newest checkpoint's student (params + batch_stats) to `output`.

  Auxiliary modules (connectors, embeddings, memory banks) and the optimizer
  state are left out: the file is the deployable network. A JSON sidecar
  (`output + '.json'`) names the architecture and the source run.
  """
  from flax import serialization
  cfg, setup, step, state = _restore_workdir(workdir)
  student = jax.device_get({'params': state['params']['student'], 'batch_stats': state['batch_stats']})
  with open(output, 'wb') as f:
    f.write(serialization.to_bytes(student))
  meta = {'model': cfg.model.name, 'cohort': list(cfg.model.cohort),
          'model_kwargs': dict(cfg.model.kwargs), 'num_classes': setup.dataset.num_classes,
          'dataset': cfg.data.name, 'step': int(step), 'source': os.path.abspath(workdir),
          'hash': ckpt_lib.tree_hash(student)}
  with open(output + '.json', 'w') as f:
    json.dump(meta, f, indent=2)
  return meta
