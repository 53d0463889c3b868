"""Optimizer and learning-rate schedules from the config.

SGD follows PyTorch's semantics, which every reference recipe assumes:
coupled weight decay (g + wd * p) before momentum, `v = mu * v + g`,
Nesterov `g + mu * v`, and the decay applied to every parameter (BN included)
unless a term opts out (`Term.aux_weight_decay`).

`optim.name` picks the update: 'sgd' (above), 'dot' (DOT, Zhao et al. 2023,
mdistiller `engine/dot.py`: see `train/dot.py`; the step then computes the
task and distillation gradients separately because the optimizer asks for
them) or 'adam' (PyTorch Adam: L2 `g + wd * p` before the moments, bias
correction, eps outside the square root; SRRL's binary students).

Batch-size scaling: with `optim.base_batch_size > 0` the learning rate is
`lr * batch_size / base_batch_size` (Goyal et al.'s linear rule); recipes in
`configs/` give the lr for their own batch size and leave it at 0.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

import jax
import optax

from kdjax.distill.api import merge_needs
from kdjax.train import dot

OPTIMIZERS = ('sgd', 'dot', 'adam')


def learning_rate(optim, steps_per_epoch: int, epochs: float) -> optax.Schedule:
  lr = optim.lr
  if optim.base_batch_size:
    lr = lr * optim.batch_size / optim.base_batch_size
  total = max(int(round(epochs * steps_per_epoch)), 1)
  warmup = int(round(optim.warmup_epochs * steps_per_epoch))
  if optim.schedule == 'piecewise':
    main = optax.piecewise_constant_schedule(
        lr, {int(round(e * steps_per_epoch)) - warmup: optim.decay_factor
             for e in optim.boundaries_epochs if e * steps_per_epoch > warmup})
  elif optim.schedule == 'cosine':
    main = optax.cosine_decay_schedule(lr, max(total - warmup, 1))
  elif optim.schedule == 'constant':
    main = optax.constant_schedule(lr)
  else:
    raise ValueError(f"unknown optim.schedule {optim.schedule!r}; use 'piecewise', 'cosine' or 'constant'.")
  if warmup <= 0:
    return main
  # Step i of the warm-up uses lr * (i + 1) / warmup, then the main schedule (shifted).
  ramp = optax.linear_schedule(lr / warmup, lr, max(warmup - 1, 1))
  return optax.join_schedules([ramp, main], [warmup])


def path_str(path: Sequence[Any]) -> str:
  return '/'.join(str(getattr(p, 'key', p)) for p in path)


def label_tree(params, fn) -> Any:
  """A tree of the same structure whose leaves are fn('a/b/c')."""
  return jax.tree_util.tree_map_with_path(lambda p, _: fn(path_str(p)), params)


def group_of(path: str, groups: Sequence[str]) -> str | None:
  """The update group ('group<i>') of a parameter path: the first regex it matches."""
  for i, g in enumerate(groups):
    if re.search(g, path):
      return f'group{i}'
  return None


def update_groups(needs) -> tuple[str, ...]:
  """One regex per update group of a `distill.api.Needs` (a group's regexes joined by '|')."""
  return tuple('|'.join(f'(?:{r})' for r in regexes) for regexes in needs.update_groups.values())


def replace_group_state(old_state, new_state, group: str):
  """Keep `new_state`'s inner state for `group` only (multi_transform states)."""
  inner = dict(old_state.inner_states)
  inner[group] = new_state.inner_states[group]
  return old_state._replace(inner_states=inner)


def make_tx(optim, schedule: optax.Schedule, params, *, trainable: Sequence[str] = (),
            no_decay_prefixes: Sequence[str] = (),
            update_groups: Sequence[str] = ()) -> optax.GradientTransformation:
  """SGD for `params` = {'student': ..., 'aux': {...}}.

  Args:
    trainable: regexes over '/'-joined parameter paths; when non-empty, the
      parameters that match none of them are frozen (zero update, no decay).
    no_decay_prefixes: path prefixes exempt from weight decay.
    update_groups: regexes defining parameter groups that the step updates
      one after another (declared by terms, see `update_groups`); each
      gets its own optimizer state. Parameters in no group are frozen. One
      group or none: the plain update.
  """
  patterns = [re.compile(p) for p in trainable]

  def is_trainable(path):
    return not patterns or any(p.search(path) for p in patterns)

  paths = jax.tree.leaves(label_tree(params, lambda k: k))
  if patterns and not any(is_trainable(k) for k in paths):
    raise ValueError(f'stage.trainable={list(trainable)} matches no parameter; paths look like '
                     f'{sorted(paths)[:3]}')
  decay_mask = label_tree(params, lambda k: not k.startswith(tuple(no_decay_prefixes)))
  name = optim.get('name', 'sgd')
  if name not in OPTIMIZERS:
    raise ValueError(f'unknown optim.name {name!r}; use one of {", ".join(OPTIMIZERS)}.')
  if name == 'dot':
    return _dot_tx(optim, schedule, params, paths, decay_mask, is_trainable, update_groups)
  decay = (optax.add_decayed_weights(optim.weight_decay, mask=decay_mask) if optim.weight_decay
           else optax.identity())
  if name == 'adam':
    sgd = optax.chain(decay, optax.scale_by_adam(b1=optim.adam_b1, b2=optim.adam_b2, eps=optim.adam_eps),
                      optax.scale_by_learning_rate(schedule))
  else:
    sgd = optax.chain(
        decay,
        optax.trace(decay=optim.momentum, nesterov=optim.nesterov) if optim.momentum else optax.identity(),
        optax.scale_by_learning_rate(schedule),
    )
  if len(update_groups) > 1:
    for i, g in enumerate(update_groups):
      if not any(group_of(k, update_groups) == f'group{i}' for k in paths):
        raise ValueError(f'update group {i} ({g!r}, declared by a term) matches no parameter (or '
                         f'only ones an earlier group took); paths look like {sorted(paths)[:3]}')
    labels = label_tree(params, lambda k: (group_of(k, update_groups) or 'freeze')
                        if is_trainable(k) else 'freeze')
    txs = {name: sgd for name in (f'group{i}' for i in range(len(update_groups)))}
    return optax.multi_transform({**txs, 'freeze': optax.set_to_zero()}, labels)
  # One group (or none) is the plain update; parameters outside a declared group stay frozen.
  def in_group(k):
    return not update_groups or group_of(k, update_groups) is not None
  labels = label_tree(params, lambda k: 'train' if is_trainable(k) and in_group(k) else 'freeze')
  return optax.multi_transform({'train': sgd, 'freeze': optax.set_to_zero()}, labels)


def _dot_tx(optim, schedule, params, paths, decay_mask, is_trainable, update_groups):
  """`dot.dot_sgd` with freezing as masks: a frozen leaf gets neither gradient (no update, no decay).

  The task (CE) gradient reaches only the student (`student/...`); the
  distillation gradient reaches every trainable leaf. A student leaf that no
  term reaches (a feature method's classifier) keeps two buffers where
  mdistiller, which sees `grad is None`, keeps one with the mean momentum.
  """
  if len(update_groups) > 1:
    raise ValueError("optim.name='dot' cannot run a method with several update groups (DML-style "
                     "alternating updates); use optim.name='sgd'.")
  if optim.nesterov:
    raise ValueError("optim.name='dot' has no Nesterov variant (mdistiller's DOT has none); set "
                     "optim.nesterov=False.")
  if not optim.momentum:
    raise ValueError("optim.name='dot' needs optim.momentum > 0 (mdistiller: 0.9).")
  del paths
  in_group = lambda k: not update_groups or group_of(k, update_groups) is not None
  train = label_tree(params, lambda k: is_trainable(k) and in_group(k))
  task = label_tree(params, lambda k: k.startswith('student/') and is_trainable(k) and in_group(k))
  return dot.dot_sgd(schedule, momentum=optim.momentum, delta=optim.dot_delta,
                     weight_decay=optim.weight_decay, decay_mask=decay_mask, task_mask=task,
                     kd_mask=train)


def stage_tx(setup, stage_idx: int, params):
  """(optimizer, lr schedule) of one stage of a `train.setup.Setup`.

  Auxiliary modules of other stages stay frozen (no update, no decay) unless
  the stage lists `trainable` regexes; the update groups are those the
  stage's terms declare (`Term.needs`).
  """
  st, terms = setup.stages[stage_idx], setup.stage_terms[stage_idx]
  schedule = learning_rate(st.optim, setup.steps_per_epoch, st.epochs)
  active = [t.name for t in terms if t.name in params['aux']]
  trainable = list(st.trainable)
  if not trainable and len(active) < len(params['aux']):
    trainable = ['^student/'] + [f'^aux/{n}/' for n in active]
  no_decay = [f'aux/{t.name}/' for t in terms if not t.aux_weight_decay]
  tx = make_tx(st.optim, schedule, params, trainable=trainable, no_decay_prefixes=no_decay,
               update_groups=update_groups(merge_needs([t.needs for t in terms])))
  return tx, schedule
