"""The one train step, for plain training and every distillation method.

Synopsis:
  state = {'step', 'params': {'student', 'aux': {term: ...}}, 'batch_stats',
           'aux_state': {term: {collection: ...}}, 'opt'}

  `make_train_step` binds the static parts (models, resolved terms, optimizer,
  batch source) and returns a pure `step(state, teacher_vars, data)`. The
  teacher is a separate, non-donated argument run in eval mode outside the
  gradient; student and teacher see the same augmented batch; every random
  number derives from (seed, step), so resuming needs no saved RNG.
  A step whose loss is not finite leaves the state untouched (so no NaN ever
  reaches a checkpoint) and the loop stops with the step and the terms.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import optax

from kdjax.distill.api import Context, Term
from kdjax.train import optim as optim_lib

# Fixed stream ids folded into the step key; changing them changes every run.
_STREAM_AUG, _STREAM_DEPTH, _STREAM_TERMS = 1, 2, 3


def cross_entropy(logits, labels):
  """Mean softmax cross-entropy with integer labels."""
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


@dataclasses.dataclass(frozen=True)
class StepConfig:
  """Static description of one stage's step."""
  seed: int
  steps_per_epoch: int
  stage_start_step: int
  stage_epochs: float
  ce_weight: float
  num_classes: int
  teacher_train_mode: bool = False
  # Per-block survival probabilities for stochastic depth (None: off).
  survival: tuple[float, ...] | None = None
  # Regexes over parameter paths updated one after another (DML order).
  update_groups: tuple[str, ...] = ()
  # False: the student runs in eval mode (running BN statistics, not updated).
  student_train: bool = True


def group_names(groups):
  return [f'group{i}' for i in range(len(groups))]


def step_keys(seed: int, step):
  """The step's base key: a pure function of (seed, step)."""
  return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), 0), step)


def make_train_step(*, student, teacher, terms: Sequence[Term], tx: optax.GradientTransformation,
                    batch_fn: Callable, cfg: StepConfig, batch_sharding=None) -> Callable:
  """Returns `step(state, teacher_vars, data) -> (state, metrics)` (not jitted)."""
  survival = None if cfg.survival is None else jnp.asarray(cfg.survival, jnp.float32)

  def step_fn(state, teacher_vars, data):
    step = state['step']
    key = step_keys(cfg.seed, step)
    batch = batch_fn(data, step, jax.random.fold_in(key, _STREAM_AUG))
    if batch_sharding is not None:
      batch = jax.lax.with_sharding_constraint(batch, batch_sharding)
    images, labels = batch['image'], batch['label']
    progress = (step - cfg.stage_start_step).astype(jnp.float32) / cfg.steps_per_epoch

    t_feats, apply_teacher = None, None
    if teacher is not None:
      def apply_teacher(x):
        if cfg.teacher_train_mode:  # OFD's official code: teacher BN on batch statistics.
          (lg, ft), _ = teacher.apply(teacher_vars, x, train=True, mutable=['batch_stats'])
        else:
          lg, ft = teacher.apply(teacher_vars, x, train=False)
        return lg, {**ft, 'logits': lg}
      _, t_feats = jax.lax.stop_gradient(apply_teacher(images))

    model_kw = {}
    if survival is not None:
      keep = jax.random.bernoulli(jax.random.fold_in(key, _STREAM_DEPTH), survival)
      model_kw['branch_scale'] = keep.astype(jnp.float32)

    def loss_fn(params, batch_stats, aux_states):
      def apply_student(x, **kw):
        (lg, ft), _ = student.apply({'params': params['student'], 'batch_stats': batch_stats},
                                    x, train=True, mutable=['batch_stats'], **kw)
        return lg, {**ft, 'logits': lg}

      if cfg.student_train:
        (s_logits, s_feats), new_model_state = student.apply(
            {'params': params['student'], 'batch_stats': batch_stats},
            images, train=True, mutable=['batch_stats'], **model_kw)
      else:
        s_logits, s_feats = student.apply({'params': params['student'], 'batch_stats': batch_stats},
                                          images, train=False, **model_kw)
        new_model_state = {'batch_stats': batch_stats}
      s_feats = {**s_feats, 'logits': s_logits}
      ce = cross_entropy(s_logits, labels)
      total = cfg.ce_weight * ce
      metrics = {'loss/ce': ce}
      new_aux_states = dict(aux_states)
      for i, term in enumerate(terms):
        aux = {'params': params['aux'].get(term.name, {}), **aux_states.get(term.name, {})}
        ctx = Context(student=s_feats, teacher=t_feats, labels=labels, index=batch['index'],
                      images=images, rng=jax.random.fold_in(jax.random.fold_in(key, _STREAM_TERMS), i),
                      progress=progress, stage_epochs=cfg.stage_epochs, train=True,
                      num_classes=cfg.num_classes, apply_student=apply_student,
                      apply_teacher=apply_teacher, teacher_variables=teacher_vars,
                      survival=survival)
        loss, term_metrics, term_state = term.loss(aux, ctx)
        total = total + term.weight * loss
        metrics[f'loss/{term.name}'] = loss
        metrics.update({f'{term.name}/{k}': v for k, v in term_metrics.items()})
        if term_state:
          new_aux_states[term.name] = {**aux_states.get(term.name, {}), **term_state}
      metrics['loss/total'] = total
      metrics['train_accuracy'] = jnp.mean(jnp.argmax(s_logits, -1) == labels)
      return total, (metrics, new_model_state['batch_stats'], new_aux_states)

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    params, batch_stats, aux_states, opt = (state['params'], state['batch_stats'],
                                            state['aux_state'], state['opt'])
    if not cfg.update_groups:
      (loss, (metrics, batch_stats, aux_states)), grads = grad_fn(params, batch_stats, aux_states)
      updates, opt = tx.update(grads, opt, params)
      params = optax.apply_updates(params, updates)
      finite = jnp.isfinite(loss)
      grad_norm = optax.tree.norm(grads)
    else:
      # DML's alternating order: each group is updated after a fresh forward
      # pass that already sees the groups updated before it. The optimizer has
      # one inner state per group (see optim.make_tx), and only the updated
      # group's state advances.
      finite, grad_norm, metrics = jnp.array(True), 0.0, None
      for g, name in enumerate(group_names(cfg.update_groups)):
        (loss, (m, batch_stats, aux_states)), grads = grad_fn(params, batch_stats, aux_states)
        metrics = m if metrics is None else metrics
        in_group = optim_lib.label_tree(params, lambda p: optim_lib.group_of(p, cfg.update_groups) == name)
        grads = jax.tree.map(lambda gr, keep: gr if keep else jnp.zeros_like(gr), grads, in_group)
        updates, new_opt = tx.update(grads, opt, params)
        updates = jax.tree.map(lambda u, keep: u if keep else jnp.zeros_like(u), updates, in_group)
        opt = optim_lib.replace_group_state(opt, new_opt, name)
        params = optax.apply_updates(params, updates)
        finite = finite & jnp.isfinite(loss)
        grad_norm = grad_norm + optax.tree.norm(grads) ** 2
      grad_norm = jnp.sqrt(grad_norm)
    candidate = {'params': params, 'batch_stats': batch_stats, 'aux_state': aux_states, 'opt': opt}
    kept = jax.tree.map(lambda new, old: jnp.where(finite, new, old), candidate,
                        {k: state[k] for k in candidate})
    metrics['grad_norm'] = grad_norm
    return {'step': step + 1, **kept}, metrics

  return step_fn


def make_eval_fn(model, survival: Sequence[float] | None = None):
  """`eval(params, batch_stats, images) -> {name: logits}` in inference mode.

  Returns the main 'logits' and every '<prefix>/logits' feature (cohort
  members, ONE's branches and ensemble), so all of them are evaluated.
  With stochastic depth the deployed network is the expected one: every
  residual branch scaled by its survival probability.
  """
  kw = {}
  if survival is not None:
    kw['branch_scale'] = jnp.asarray(survival, jnp.float32)

  def eval_fn(params, batch_stats, images):
    logits, feats = model.apply({'params': params, 'batch_stats': batch_stats}, images, train=False, **kw)
    return {'logits': logits, **{k: v for k, v in feats.items() if k.endswith('/logits')}}
  return eval_fn
