"""On-the-fly native ensemble (Lan et al. 2018, Knowledge Distillation by On-the-Fly Native
Ensemble; official `cifar_one.py`).

Formula, for branches z_i and the gated ensemble z_e of a `one_<arch>` student:
  L = sum_i CE(z_i) + CE(z_e) + w(e) * sum_i tau^2 KL(softmax(z_e/tau) || softmax(z_i/tau))
  w(e) = kl_weight * exp(-5 (1 - min(e / 80, 1))^2),  tau 3; the target is detached.
Set ce_weight 0 (the term computes every CE).

  dict(method='one')       # model.name one_resnet32
"""

from __future__ import annotations

from typing import Sequence

import chex
import jax
import jax.numpy as jnp
import optax

from kdjax.distill import checks
from kdjax.distill.api import BuildInfo, Context, Term, no_aux, register_method

Array = jax.Array


def _ce(logits: Array, labels: Array) -> Array:
  """Mean softmax cross-entropy with integer labels."""
  return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels).mean()


def one_rampup(progress: Array, rampup_epochs: float = 80.0, per_epoch: bool = True) -> Array:
  """ONE's consistency weight w(e) = exp(-5 (1 - min(e, R)/R)^2) (sigmoid ramp-up).

  The official code evaluates it once per epoch at the 0-indexed epoch number
  (e = floor(progress)); `per_epoch=False` uses the fractional progress.
  rampup_epochs = 0 gives 1.
  """
  if rampup_epochs <= 0:
    return jnp.ones(())
  e = jnp.floor(progress) if per_epoch else progress
  phase = 1.0 - jnp.clip(e, 0.0, rampup_epochs) / rampup_epochs
  return jnp.exp(-5.0 * phase * phase).astype(jnp.float32)


def one_kl(branch_logits: Array, ensemble_logits: Array, *, temperature: float = 3.0,
           eps: float = 1e-7) -> Array:
  """ONE's `KLLoss`: tau^2 * sum_k q (log q - log p_b) / N, q = softmax(z_e/tau) + eps.

  q is detached (the code uses `.data`), so the KL never trains the ensemble
  or the gate; `eps` is added to the target before its log, as in the code.
  """
  chex.assert_rank([branch_logits, ensemble_logits], 2)
  chex.assert_equal_shape([branch_logits, ensemble_logits])
  q = jax.nn.softmax(jax.lax.stop_gradient(ensemble_logits).astype(jnp.float32) / temperature, -1) + eps
  log_p = jax.nn.log_softmax(branch_logits.astype(jnp.float32) / temperature, -1)
  return temperature ** 2 * jnp.sum(q * (jnp.log(q) - log_p)) / branch_logits.shape[0]


def one_loss(branch_logits: Sequence[Array], ensemble_logits: Array, labels: Array, *,
             kl_weight: Array | float = 1.0, temperature: float = 3.0,
             ensemble_ce: bool = True) -> tuple[Array, dict[str, Array]]:
  """On-the-fly Native Ensemble (Lan et al. 2018, official `cifar_one.py`).

  loss = sum_i CE(z_i) + CE(z_e) + kl_weight * sum_i one_kl(z_i, z_e).
  `kl_weight` is w(e) from `one_rampup`. With `ensemble_ce=False` the ensemble's
  CE is left to the step (ce_weight 1 on the main logits = the ensemble).
  """
  if len(branch_logits) < 1:
    raise ValueError('one_loss: needs at least one branch.')
  total, metrics, kl_sum = jnp.zeros(()), {}, jnp.zeros(())
  for i, z in enumerate(branch_logits):
    ce = _ce(z, labels)
    kl = one_kl(z, ensemble_logits, temperature=temperature)
    metrics[f'ce{i}'], metrics[f'kl{i}'] = ce, kl
    total, kl_sum = total + ce, kl_sum + kl
  if ensemble_ce:
    metrics['ce_ensemble'] = _ce(ensemble_logits, labels)
    total = total + metrics['ce_ensemble']
  metrics['kl'] = kl_sum
  return total + kl_weight * kl_sum, metrics


@register_method('one', family='online', paper='Lan et al. 2018, Knowledge Distillation by '
                 'On-the-Fly Native Ensemble')
def build_one(info: BuildInfo, *, weight: float = 1.0, temperature: float = 3.0,
              rampup_epochs: float = 80.0, per_epoch_rampup: bool = True,
              ensemble_ce: bool = True, kl_weight: float = 1.0) -> Term:
  """ONE: sum_i CE(z_i) + CE(z_e) + w(e) sum_i tau^2 KL(q_e || p_i), tau 3, 80-epoch ramp-up.

  Needs a `one_<arch>` student (kdjax.models.one). The ensemble target is
  detached, so the KL trains the branches (and the shared trunk), never the
  gate. Set ce_weight 0 (or ensemble_ce=False with ce_weight 1: the main
  logits are the ensemble's).
  """
  m = checks.count_features(info, 'branch{}/logits')
  if m < 1 or 'ensemble/logits' not in info.student_shapes:
    raise ValueError(f'one: needs a ONE student (model.name one_<arch>, e.g. one_resnet32) with '
                     f"'branch<i>/logits' and 'ensemble/logits'; {info.student_arch or 'the student'} "
                     f'has features {sorted(info.student_shapes)}.')
  keys = tuple(f'branch{i}/logits' for i in range(m))
  checks.same_logits(info, 'one', keys + ('ensemble/logits',))
  checks.positive('one', temperature=temperature)
  checks.nonneg('one', rampup_epochs=rampup_epochs, kl_weight=kl_weight)

  def loss(ctx: Context):
    w = kl_weight * one_rampup(ctx.progress, rampup_epochs, per_epoch=per_epoch_rampup)
    value, metrics = one_loss([ctx.student[k] for k in keys], ctx.student['ensemble/logits'],
                                 ctx.labels, kl_weight=w, temperature=temperature,
                                 ensemble_ce=ensemble_ce)
    return value, {**metrics, 'rampup': w}
  return Term(name='one', method='one', weight=float(weight), loss=no_aux(loss), needs_teacher=False)
