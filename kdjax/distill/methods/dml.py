"""Deep mutual learning (Zhang et al. 2018, Deep Mutual Learning).

Formula, for a cohort of M members (`config.model.cohort`):
  L = sum_i [CE_i + kl_weight * c * sum_{j != i} KL(p_j || p_i)],  p = softmax(z / tau)
c = 1/(M - 1) ('mean', paper) or 1 ('sum', official TF), times tau^2 when
`tau_squared`. Every target p_j is stopped, so the gradient of the sum with
respect to member i is that of L_i. The term computes every member's CE: set
ce_weight 0. With `alternate=True` (default, the paper's Alg. 1) the term
declares one update group per member, updated one after another, each after a
fresh forward pass; `alternate=False` updates all members at once (official TF).
Every CE and KL is a mean of per-sample values, so on a masked batch
(`data.drop_remainder=False`) the term averages them over the valid rows (`Term.masked`).

  c.model.cohort = ('resnet32', 'resnet32')
  c.distill.ce_weight = 0.0
  c.distill.terms = dict(dml=dict(method='dml', temperature=1.0))
"""

from __future__ import annotations

from typing import Sequence

import chex
import jax
import jax.numpy as jnp
import optax

from kdjax import losses
from kdjax.distill import checks
from kdjax.distill.api import BuildInfo, Context, Needs, Term, no_aux, register_method
from kdjax.distill.methods import kd as kd_lib

Array = jax.Array


def _ce(logits: Array, labels: Array, mask: Array | None = None) -> Array:
  """Mean softmax cross-entropy with integer labels (over the valid rows of `mask`)."""
  ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)
  return losses.masked_mean(ce, mask)


def dml_loss(member_logits: Sequence[Array], labels: Array, *, temperature: float = 1.0,
             tau_squared: bool = False, reduction: str = 'mean', kl_weight: float = 1.0,
             include_ce: bool = True, mask: Array | None = None) -> tuple[Array, dict[str, Array]]:
  """Deep Mutual Learning (Zhang et al. 2018), summed over the cohort.

  For member i: L_i = CE_i + kl_weight * c * sum_{j != i} KL(p_j || p_i), with
  p = softmax(z / tau), p_j a constant target (stop-gradient), KL batchmean,
  c = 1/(M - 1) for reduction='mean' (paper, Alg. 1 with K_n - 1) or 1 for
  'sum' (the official TF code), times tau^2 when `tau_squared`.
  Returns sum_i L_i: because every target is stopped, the gradient of the sum
  with respect to member i's parameters is exactly the gradient of L_i, so the
  same scalar serves the simultaneous update (official TF) and the alternating
  one (paper; `alternate=True` declares one update group per member).

  Args:
    member_logits: M >= 2 arrays [N, K].
    labels: [N] integer labels.
    temperature: tau (paper 1; "KD beyond model compression" 4).
    tau_squared: multiply the KL by tau^2 (Hinton's gradient-scale convention).
    reduction: 'mean' over the M - 1 peers, or 'sum'.
    kl_weight: multiplier of the mimicry term.
    include_ce: add each member's CE (then the config's ce_weight should be 0).
    mask: optional 0/1 [N]: every mean over the batch is taken over the rows with mask 1.

  Returns:
    (scalar, metrics with 'ce{i}' and 'kl{i}').
  """
  m = len(member_logits)
  if m < 2:
    raise ValueError(f'dml_loss: needs a cohort of at least 2, got {m}.')
  if reduction not in ('mean', 'sum'):
    raise ValueError(f"dml_loss: reduction must be 'mean' or 'sum', got {reduction!r}.")
  chex.assert_rank(list(member_logits), 2)
  chex.assert_equal_shape(list(member_logits))
  # `kd_per_sample` is tau^2 * KL_n(p_j || p_i) with p_j stopped; undo tau^2 unless asked.
  scale = (1.0 / (m - 1) if reduction == 'mean' else 1.0) / (1.0 if tau_squared else temperature ** 2)
  total, metrics = jnp.zeros(()), {}
  for i, zi in enumerate(member_logits):
    kl = scale * sum(losses.masked_mean(kd_lib.kd_per_sample(zi, zj, temperature=temperature),
                                        mask)
                     for j, zj in enumerate(member_logits) if j != i)
    metrics[f'kl{i}'] = kl
    total = total + kl_weight * kl
    if include_ce:
      ce = _ce(zi, labels, mask)
      metrics[f'ce{i}'] = ce
      total = total + ce
  return total, metrics


@register_method('dml', family='online', paper='Zhang et al. 2018, Deep Mutual Learning')
def build_dml(info: BuildInfo, *, weight: float = 1.0, temperature: float = 1.0,
              tau_squared: bool = False, reduction: str = 'mean', kl_weight: float = 1.0,
              include_ce: bool = True, alternate: bool = True) -> Term:
  """Deep mutual learning over a cohort: sum_i [CE_i + mean_{j!=i} KL(p_j || p_i)].

  Reads 'member{i}/logits' of a `config.model.cohort` student. Defaults: the
  paper (tau 1, mean over peers); reduction='sum' is the official TF code;
  "KD beyond model compression" uses tau 4 (its tau^2 scaling is unstated; `tau_squared` chooses).
  Set ce_weight 0 (the term computes every member's CE; `include_ce=False`
  leaves only member 0's to the step, which is rarely what you want).
  `alternate` (default, the paper's Alg. 1): the members are updated one after
  another, each after a fresh forward pass (the term declares one update group
  per member); False: one simultaneous update (official TF code).
  """
  m = checks.count_features(info, 'member{}/logits')
  if m < 2:
    raise ValueError(f'dml: needs a cohort student with >= 2 members (set config.model.cohort, '
                     f'e.g. (\'resnet32\', \'resnet32\')); student features have {m} '
                     "'member<i>/logits'.")
  keys = tuple(f'member{i}/logits' for i in range(m))
  checks.same_logits(info, 'dml', keys)
  checks.positive('dml', temperature=temperature)
  checks.nonneg('dml', kl_weight=kl_weight)
  if reduction not in ('mean', 'sum'):
    raise ValueError(f"dml: reduction must be 'mean' (paper) or 'sum' (official TF), got {reduction!r}.")

  def loss(ctx: Context):
    return dml_loss([ctx.student[k] for k in keys], ctx.labels, temperature=temperature,
                       tau_squared=tau_squared, reduction=reduction, kl_weight=kl_weight,
                       include_ce=include_ce, mask=ctx.mask)
  groups = {f'member{i}': (f'^student/member{i}/',) for i in range(m)} if alternate else {}
  return Term(name='dml', method='dml', weight=float(weight), loss=no_aux(loss), needs_teacher=False,
              needs=Needs(update_groups=groups), masked=True)
