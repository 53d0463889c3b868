"""A stage's compiled train step, k steps per dispatch, and the finiteness check of their metrics.

Synopsis:
  `stage_step` builds the un-jitted step of `step.py` for one stage (the seed
  may be a traced int32: seed groups vmap it); `compile_stage` jits it over the
  data-parallel mesh; `dispatcher` is the program the training driver calls,
  `fn(state, teacher_vars, data, n)`, running n <= k steps with every metric
  under a leading [k] axis. The driver keeps each dispatch's (first step,
  metrics, n) until the next host sync, where `check_finite` turns them into
  one (step, metrics) per step and stops the run at the first non-finite loss.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from kdjax.train import setup as setup_lib, step as step_lib


class NonFiniteLossError(FloatingPointError):
  pass


def stage_step(setup, stage_idx, tx, batch_fn, seed):
  """`fn(state, teacher_vars, data) -> (state, metrics)`: the un-jitted step of one stage."""
  st = setup.stages[stage_idx]
  scfg = step_lib.StepConfig(seed=seed, steps_per_epoch=setup.steps_per_epoch,
                             stage_start_step=setup.stage_bounds[stage_idx][0],
                             stage_epochs=float(st.epochs), ce_weight=float(st.distill.ce_weight),
                             num_classes=setup.dataset.num_classes)
  return step_lib.make_train_step(student=setup.student,
                                  teacher=setup.teacher.model if setup.teacher else None,
                                  terms=setup.stage_terms[stage_idx], tx=tx, batch_fn=batch_fn,
                                  cfg=scfg, batch_sharding=setup_lib.data_sharded(setup.mesh))


def loop_steps(step_fn, steps: int):
  """`fn(state, *args, n)`: n <= `steps` calls of `step_fn(state, *args)` in one fori_loop.

  Every metric gets a leading [steps] axis of which the first n rows are
  filled; n is a runtime argument, so one compiled body serves full and
  partial dispatches.
  """
  def fn(state, *args_and_n):
    *args, n = args_and_n
    _, m_shape = jax.eval_shape(step_fn, state, *args)
    buf = jax.tree.map(lambda a: jnp.zeros((steps,) + a.shape, a.dtype), m_shape)

    def body(i, carry):
      s, b = carry
      s, m = step_fn(s, *args)
      return s, jax.tree.map(lambda x, y: x.at[i].set(y), b, m)
    return jax.lax.fori_loop(0, n, body, (state, buf))
  return fn


def compile_stage(setup, stage_idx, tx, batch_fn, steps: int = 1, dispatch_loop: bool | None = None):
  """The jitted train step of one stage over the data-parallel mesh.

  With `steps` = k > 1 (or `dispatch_loop`) the program is `fn(state, teacher_vars, data, n)`: a
  loop of n <= k steps in one dispatch (see `loop_steps`). Each step derives
  its batch and keys from the state's step counter, so n steps in one
  dispatch are bit-identical to n dispatches of one step of this program.
  """
  repl = setup_lib.replicated(setup.mesh)
  fn = stage_step(setup, stage_idx, tx, batch_fn, setup.config.seed)
  if dispatch_loop or (dispatch_loop is None and steps > 1):
    fn = loop_steps(fn, steps)
  # The state is donated (updated in place); the teacher and the data are not.
  return jax.jit(fn, donate_argnums=(0,), out_shardings=(repl, repl))


def dispatcher(setup, stage_idx, tx, batch_fn, k: int):
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


def per_step(entries):
  """(step, metrics) per step; a dispatch (step, stacked metrics, n) gives n of them."""
  out = []
  for e in entries:
    if len(e) == 2:
      out.append(e)
    else:
      first, m, n = e
      out.extend((first + i, {k: v[i] for k, v in m.items()}) for i in range(n))
  return out


def check_finite(pending, terms_of_stage, members: list[str] | None = None):
  """(step, metrics) per step of `pending` dispatches, on the host (blocks until they are done).

  Raises NonFiniteLossError naming the first bad step and its loss terms. For
  a seed group the metrics have a leading seed axis and `members` names each
  seed; the message names the first bad one.
  """
  if not pending:
    return []
  host = per_step(jax.device_get(pending))
  for step, m in host:
    bad = np.flatnonzero(~np.isfinite(np.reshape(m['loss/total'], -1)))
    if bad.size:
      k = int(bad[0])
      pick = (lambda v: v) if members is None else (lambda v: v[k])
      losses = {key: float(pick(v)) for key, v in m.items() if key.startswith('loss/')}
      where = '' if members is None else f'{members[k]}: '
      raise NonFiniteLossError(
          f'{where}non-finite loss at step {step}: {losses}. The state was not updated on that step '
          f'and the last checkpoint is intact. Lower the learning rate or the weight of the '
          f'exploding term (terms in this stage: {[t.name for t in terms_of_stage]}).')
  return host
