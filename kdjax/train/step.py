"""The one train step, for plain training and every distillation method.

Synopsis:
  state = {'step', 'params': {'student', 'aux': {term: ...}}, 'batch_stats',
           'aux_state': {term: {collection: ...}}, 'opt'}

  `make_train_step` binds the static parts (models, resolved terms, optimizer,
  batch source) and returns a pure `step(state, teacher_vars, data)`. The
  teacher is a separate, non-donated argument run in eval mode outside the
  gradient; student and teacher see the same augmented batch; every random
  number derives from (seed, step), so resuming needs no saved RNG.
  The step has no method switches: each term declares what it needs
  (`Term.needs`: extra passes, teacher BN on batch statistics, a
  stochastic-depth student, update groups, ...) and only that is built.
  A step whose loss is not finite leaves the state untouched (so no NaN ever
  reaches a checkpoint) and the loop stops with the step and the terms.

  Masked batches (`data.drop_remainder=False`): a batch may carry `mask` [B]
  (True for valid rows; the last partial batch of an epoch is padded to the
  fixed shape with repeated images). The step then equals a step on the valid
  rows alone: CE, accuracy and `per_sample` terms are means over valid rows,
  every train-mode BatchNorm (student, teacher batch statistics, auxiliary
  modules) takes its statistics over valid rows (`models.common.batch_mask`),
  and terms declaring `Term.masked` read `ctx.mask` themselves. A batch
  without `mask` runs exactly the unmasked program.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import optax

from kdjax import losses
from kdjax.distill.api import Context, Needs, Term, check_masking, merge_needs
from kdjax.models.common import batch_mask
from kdjax.train import dot as dot_lib
from kdjax.train import optim as optim_lib

# The one table of RNG stream ids (changing one changes every run):
#   fold_in(key(seed), STREAM_STEP), then the step: the step key, from which
#     STREAM_AUG    data augmentation of the batch
#     STREAM_DEPTH  stochastic-depth keep masks of the student pass
#     STREAM_TERMS  per-term keys, ctx.rng = fold_in(fold_in(step key, TERMS), term index)
#   fold_in(key(seed), STREAM_EPOCH), then the epoch: that epoch's sample order (inputs.py)
STREAM_STEP, STREAM_EPOCH = 0, 1
STREAM_AUG, STREAM_DEPTH, STREAM_TERMS = 1, 2, 3


def cross_entropy(logits, labels):
  """Mean softmax cross-entropy with integer labels."""
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


@dataclasses.dataclass(frozen=True)
class StepConfig:
  """Static description of one stage's step (method-specific needs come from the terms)."""
  seed: int  # or a traced int32 scalar: multiseed.py vmaps the step over seeds
  steps_per_epoch: int
  stage_start_step: int
  stage_epochs: float
  ce_weight: float
  num_classes: int


def stage_needs(terms: Sequence[Term]) -> Needs:
  """What the terms of one stage ask of the step, together."""
  return merge_needs([t.needs for t in terms])


def group_names(groups):
  return [f'group{i}' for i in range(len(groups))]


def step_keys(seed: int, step):
  """The step's base key: a pure function of (seed, step); `seed` may be traced."""
  return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), STREAM_STEP), step)


def make_train_step(*, student, teacher, terms: Sequence[Term], tx: optax.GradientTransformation,
                    batch_fn: Callable, cfg: StepConfig, batch_sharding=None) -> Callable:
  """Returns `step(state, teacher_vars, data) -> (state, metrics)` (not jitted).

  Builds only what the terms declare (`Term.needs`); the plain update is the
  one-group case of the grouped update.
  """
  needs = stage_needs(terms)
  survival = None if needs.survival is None else jnp.asarray(needs.survival, jnp.float32)
  groups = optim_lib.update_groups(needs)
  # An optimizer that takes the task and distillation gradients separately
  # (DOT) gets them from one forward pass; every other optimizer gets the
  # gradient of the total loss, computed exactly as before.
  split = dot_lib.takes_split_gradients(tx)
  if split and len(groups) > 1:
    raise ValueError('an optimizer taking split gradients (DOT) cannot run several update groups.')

  def step_fn(state, teacher_vars, data):
    step = state['step']
    key = step_keys(cfg.seed, step)
    batch = batch_fn(data, step, jax.random.fold_in(key, STREAM_AUG))
    if batch_sharding is not None:
      batch = jax.lax.with_sharding_constraint(batch, batch_sharding)
    images, labels = batch['image'], batch['label']
    # float 0/1 [B] for a masked batch (see the module docstring), None otherwise.
    valid = batch['mask'].astype(jnp.float32) if 'mask' in batch else None
    if valid is not None:
      check_masking(terms)  # at trace time, before anything compiles

    def rows(given):
      """The BN mask of a pass: `given` for another batch size, else the batch's."""
      return None if valid is None else (valid if given is None else given)
    progress = (step - cfg.stage_start_step).astype(jnp.float32) / cfg.steps_per_epoch

    t_feats, apply_teacher = None, None
    if teacher is not None:
      def apply_teacher(x, *, mask=None):
        if needs.teacher_batch_stats:
          with batch_mask(rows(mask)):
            (lg, ft), _ = teacher.apply(teacher_vars, x, train=True, mutable=['batch_stats'])
        else:
          lg, ft = teacher.apply(teacher_vars, x, train=False)
        return lg, {**ft, 'logits': lg}
      _, t_feats = jax.lax.stop_gradient(apply_teacher(images))

    model_kw = {}
    if survival is not None:
      keep = jax.random.bernoulli(jax.random.fold_in(key, STREAM_DEPTH), survival)
      model_kw['branch_scale'] = keep.astype(jnp.float32)

    def loss_fn(params, batch_stats, aux_states):
      def apply_student(x, *, mask=None, **kw):
        with batch_mask(rows(mask)):
          (lg, ft), _ = student.apply({'params': params['student'], 'batch_stats': batch_stats},
                                      x, train=True, mutable=['batch_stats'], **kw)
        return lg, {**ft, 'logits': lg}

      student_vars = {'params': params['student'], 'batch_stats': batch_stats}
      if needs.student_eval:
        s_logits, s_feats = student.apply(student_vars, images, train=False, **model_kw)
        new_model_state = {'batch_stats': batch_stats}
      else:
        with batch_mask(valid):
          (s_logits, s_feats), new_model_state = student.apply(
              student_vars, images, train=True, mutable=['batch_stats'], **model_kw)
      s_feats = {**s_feats, 'logits': s_logits}
      if valid is None:
        ce = cross_entropy(s_logits, labels)
      else:
        ce = losses.masked_mean(
            optax.softmax_cross_entropy_with_integer_labels(s_logits, labels), valid)
      total = cfg.ce_weight * ce
      kd_total = jnp.zeros((), total.dtype)  # the distillation part alone (DOT's second gradient)
      metrics = {'loss/ce': ce}
      new_aux_states = dict(aux_states)
      declared = dict(
          images=images if needs.images else None,
          index=batch['index'] if needs.index else None,
          apply_student=apply_student if needs.student_pass else None,
          apply_teacher=apply_teacher if needs.teacher_pass else None,
          teacher_variables=teacher_vars if needs.teacher_variables else None,
          survival=survival, mask=valid)
      for i, term in enumerate(terms):
        aux = {'params': params['aux'].get(term.name, {}), **aux_states.get(term.name, {})}
        ctx = Context(student=s_feats, teacher=t_feats, labels=labels,
                      rng=jax.random.fold_in(jax.random.fold_in(key, STREAM_TERMS), i),
                      progress=progress, stage_epochs=cfg.stage_epochs, train=True,
                      num_classes=cfg.num_classes, **declared)
        # Auxiliary modules' train-mode BN (connectors, embeddings) sees the valid rows only.
        with batch_mask(valid):
          if valid is not None and not term.masked:  # check_masking: it has per_sample
            values, term_metrics, term_state = term.per_sample(aux, ctx)
            loss = losses.masked_mean(values, valid)
          else:
            loss, term_metrics, term_state = term.loss(aux, ctx)
        total = total + term.weight * loss
        kd_total = kd_total + term.weight * loss
        metrics[f'loss/{term.name}'] = loss
        metrics.update({f'{term.name}/{k}': v for k, v in term_metrics.items()})
        if term_state:
          new_aux_states[term.name] = {**aux_states.get(term.name, {}), **term_state}
      metrics['loss/total'] = total
      correct = jnp.argmax(s_logits, -1) == labels
      if valid is None:
        metrics['train_accuracy'] = jnp.mean(correct)
      else:
        metrics['train_accuracy'] = losses.masked_mean(correct.astype(jnp.float32), valid)
        metrics['valid_rows'] = jnp.sum(valid)  # the loop weights epoch means by it
      return total, (metrics, new_model_state['batch_stats'], new_aux_states,
                     (cfg.ce_weight * ce, kd_total))

    if split:
      def grad_fn(params, batch_stats, aux_states):
        def pair_fn(p):
          total, (m, bs, auxs, parts) = loss_fn(p, batch_stats, aux_states)
          return parts, (total, m, bs, auxs)
        _, (total, m, bs, auxs), grads = dot_lib.dot_value_and_grads(pair_fn, params,
                                                                    mark_unreached=True)
        return (total, (m, bs, auxs)), grads
    else:
      value_and_grad = jax.value_and_grad(loss_fn, has_aux=True)

      def grad_fn(params, batch_stats, aux_states):
        (total, (m, bs, auxs, _)), grads = value_and_grad(params, batch_stats, aux_states)
        return (total, (m, bs, auxs)), grads
    params, batch_stats, aux_states, opt = (state['params'], state['batch_stats'],
                                            state['aux_state'], state['opt'])
    # Each group is updated after a fresh forward pass that already sees the
    # groups updated before it (DML's alternating order). With several groups
    # the optimizer has one inner state per group (see optim.make_tx) and only
    # the updated group's state advances; one group is the plain update.
    grouped = len(groups) > 1
    finite, grad_sq, metrics = jnp.array(True), 0.0, None
    for name in (group_names(groups) if grouped else [None]):
      (loss, (m, batch_stats, aux_states)), grads = grad_fn(params, batch_stats, aux_states)
      metrics = m if metrics is None else metrics
      if grouped:
        in_group = optim_lib.label_tree(params, lambda p: optim_lib.group_of(p, groups) == name)
        grads = jax.tree.map(lambda gr, keep: gr if keep else jnp.zeros_like(gr), grads, in_group)
        updates, new_opt = tx.update(grads, opt, params)
        updates = jax.tree.map(lambda u, keep: u if keep else jnp.zeros_like(u), updates, in_group)
        opt = optim_lib.replace_group_state(opt, new_opt, name)
      else:
        updates, opt = tx.update(grads, opt, params)
      params = optax.apply_updates(params, updates)
      finite = finite & jnp.isfinite(loss)
      grad_sq = grad_sq + optax.tree.norm(grads) ** 2
    if split:  # the norm of the total gradient, as for the other optimizers
      # (a None leaf is a gradient the loss does not reach: zero)
      total_grad = jax.tree.map(lambda p, a, b: sum(g for g in (a, b) if g is not None)
                                + jnp.zeros_like(p), params, grads.task, grads.kd)
      grad_sq = optax.tree.norm(total_grad) ** 2
      grads = None
    grad_norm = jnp.sqrt(grad_sq) if (grouped or split) else optax.tree.norm(grads)
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
