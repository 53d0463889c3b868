"""DOT: Distillation-Oriented Trainer (Zhao et al. 2023; mdistiller `engine/dot.py`).

Synopsis:
  tx = dot_sgd(schedule, momentum=0.9, delta=0.075, weight_decay=5e-4)
  (ce, kd), aux, grads = dot_value_and_grads(loss_pair_fn, params, batch)   # one forward
  state = tx.init(params)
  updates, state = tx.update(grads, state, params)       # grads = DOTGrads(task=..., kd=...)
  params = optax.apply_updates(params, updates)

SGD with separate momentum buffers for the task (CE) gradient and the
distillation gradient: beta_task = momentum - delta, beta_kd = momentum + delta.
Per parameter, following mdistiller's `dot` update (dampening 0):
  has both grads:  b_t <- beta_task b_t + (g_t + wd p);  b_k <- beta_kd b_k + g_k
  task grad only:  b_t <- momentum b_t + (g_t + wd p)     ((beta_task + beta_kd) / 2)
  kd grad only:    b_k <- momentum b_k + (g_k + wd p)    (no wd on the first step, as there)
  p <- p - lr (b_t + b_k)
The first step sets a buffer to its gradient (PyTorch's rule), which is what a
zero-initialised buffer gives. PyTorch knows which parameters got no gradient
(`grad is None`); JAX gives zeros, so `task_mask` / `kd_mask` (bool pytrees
like the parameters, default all True) say which gradients a parameter gets:
e.g. a connector of a feature method is kd-only and the classifier of a
feature method is task-only. With both masks all True, a parameter whose kd
gradient is identically zero keeps beta_task where mdistiller would use the
average momentum; the masks make the two agree.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax


class DOTGrads(NamedTuple):
  """The two gradients of one step: of the task loss (CE) and of the distillation loss."""
  task: Any
  kd: Any


class SplitGradientTransformation(optax.GradientTransformation):
  """An optax transformation whose `update` takes `DOTGrads` (task and distillation
  gradients separately). The train step checks `takes_split_gradients` and only
  then computes the two gradients (`dot_value_and_grads`)."""
  __slots__ = ()
  takes_split_gradients = True


def takes_split_gradients(tx) -> bool:
  """Whether the optimizer wants `DOTGrads` instead of one gradient."""
  return bool(getattr(tx, 'takes_split_gradients', False))


class DOTState(NamedTuple):
  count: jax.Array
  task_trace: Any
  kd_trace: Any


def dot_sgd(learning_rate: float | optax.Schedule, *, momentum: float = 0.9,
            delta: float = 0.075, weight_decay: float = 0.0, decay_mask: Any = None,
            task_mask: Any = None, kd_mask: Any = None) -> optax.GradientTransformation:
  """mdistiller's DistillationOrientedTrainer as an optax transformation.

  Args:
    learning_rate: a float or an optax schedule of the step count.
    momentum: the base SGD momentum (mdistiller: cfg.SOLVER.MOMENTUM).
    delta: beta_task = momentum - delta, beta_kd = momentum + delta.
    weight_decay: L2 coupled into the gradient as in torch SGD.
    decay_mask: bool pytree like the params (or None for all) selecting decayed leaves.
    task_mask: bool pytree: which leaves receive the task gradient (None: all).
    kd_mask: bool pytree: which leaves receive the distillation gradient (None: all).

  Returns:
    A GradientTransformation whose `update` takes `DOTGrads` and returns the
    final (learning-rate scaled, negated) updates.
  """
  if not (0.0 <= momentum - delta and momentum + delta < 1.0):
    raise ValueError(f'dot_sgd: need 0 <= momentum - delta and momentum + delta < 1, got '
                     f'momentum={momentum}, delta={delta}.')
  if weight_decay < 0:
    raise ValueError(f'dot_sgd: weight_decay must be >= 0, got {weight_decay}.')
  schedule = learning_rate if callable(learning_rate) else (lambda _: learning_rate)
  m_task, m_kd = momentum - delta, momentum + delta
  m_avg = (m_task + m_kd) / 2.0

  def masks(params):
    def full(mask):
      if mask is None:
        return jax.tree.map(lambda _: True, params)
      return mask
    return full(decay_mask), full(task_mask), full(kd_mask)

  def init(params):
    zeros = jax.tree.map(jnp.zeros_like, params)
    return DOTState(jnp.zeros((), jnp.int32), zeros, jax.tree.map(jnp.zeros_like, params))

  def update(grads, state, params=None):
    if not isinstance(grads, DOTGrads):
      raise TypeError('dot_sgd.update takes DOTGrads(task=..., kd=...), the gradients of the '
                      'task loss and of the distillation loss.')
    if params is None and weight_decay:
      raise ValueError('dot_sgd: weight decay needs params in update().')
    decay, has_task, has_kd = masks(grads.task)
    lr = schedule(state.count)

    def leaf(g_t, g_k, b_t, b_k, p, dec, t, k):
      wd = weight_decay * p if (weight_decay and dec) else 0.0
      if t:
        b_t = (m_task if k else m_avg) * b_t + (g_t + wd)
      if k:
        # mdistiller sets a new kd buffer to the raw gradient before adding weight
        # decay, so a kd-only parameter is not decayed on the very first step.
        wd_k = 0.0 if t else jnp.where(state.count == 0, 0.0, 1.0) * wd
        b_k = (m_kd if t else m_avg) * b_k + (g_k + wd_k)
      step = (b_t if t else 0.0) + (b_k if k else 0.0)
      return -lr * jnp.asarray(step, g_t.dtype) * jnp.ones_like(g_t), b_t, b_k

    p_tree = params if params is not None else grads.task
    out = jax.tree.map(leaf, grads.task, grads.kd, state.task_trace, state.kd_trace, p_tree,
                       decay, has_task, has_kd)
    treedef = jax.tree.structure(grads.task)
    flat = treedef.flatten_up_to(out)
    updates = treedef.unflatten([o[0] for o in flat])
    task_trace = treedef.unflatten([o[1] for o in flat])
    kd_trace = treedef.unflatten([o[2] for o in flat])
    return updates, DOTState(optax.safe_increment(state.count), task_trace, kd_trace)

  return SplitGradientTransformation(init, update)


def dot_value_and_grads(fn, params, *args):
  """Both gradients from ONE forward pass, for the train step.

  Args:
    fn: `fn(params, *args) -> ((task_loss, kd_loss), aux)`.
    params: the differentiated parameters.
    *args: further inputs of fn (not differentiated).

  Returns:
    ((task_loss, kd_loss), aux, DOTGrads(task=d task_loss, kd=d kd_loss)).
  """
  losses, vjp, aux = jax.vjp(lambda p: fn(p, *args), params, has_aux=True)
  task_loss, kd_loss = losses
  one, zero = jnp.ones_like(task_loss), jnp.zeros_like(task_loss)
  (g_task,) = vjp((one, jnp.zeros_like(kd_loss)))
  (g_kd,) = vjp((zero, jnp.ones_like(kd_loss)))
  return losses, aux, DOTGrads(g_task, g_kd)
