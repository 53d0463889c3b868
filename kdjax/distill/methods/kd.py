"""Hinton KD (Hinton et al. 2015, Distilling the Knowledge in a Neural Network), optionally
with logit adjustment (IPWD (Niu et al. 2022) appendix 2.3; Menon et al. 2021, Long-tail
Learning via Logit Adjustment).

Synopsis:
  dict(method='kd', weight=0.9, temperature=4.0)                          with ce_weight = 0.1
  dict(method='kd', weight=0.9, temperature=4.0, logit_adjust_tau=1.0)    KD + LA

Formula (RepDistiller `DistillKL`):
  L = tau^2 * mean_n KL(softmax(z_t / tau) || softmax(z_s / tau)),  tau 4, weight 0.9
with the step's CE weighted 0.1 (RD). The loss is the shared softened-KL
primitive `kdjax.losses.kd`.

KD + logit adjustment (`logit_adjust_tau` != 0): with the class prior
pi_k = n_k / N estimated from the training labels (or given as `prior`),
  z'_s = z_s + logit_adjust_tau * log(pi)
  L = tau^2 * mean_n KL(softmax(z_t / tau) || softmax(z'_s / tau)).
The IPWD appendix only says the prior is "applied to the student output when
calculating the KL divergence"; adding logit_adjust_tau * log(pi) to the raw
logits before the temperature follows Menon et al.'s logit-adjusted loss
(their default scale 1). With a uniform prior the offset is a constant per
row and the loss equals plain KD.

Per-sample loss (`Term.per_sample`): tau^2 KL_n, whose batch mean is L; IPWD's
weighting (`ipwd.with_ipw`) can weight it.
"""

from __future__ import annotations

from typing import Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np

from kdjax import losses
from kdjax.distill import checks
from kdjax.distill.api import BuildInfo, Context, Term, no_aux, register_method

Array = jax.Array


# ----------------------------------------------------------------------------
# Pure functions

def class_log_prior(train_labels, num_classes: int) -> np.ndarray:
  """log(n_k / N) from integer training labels, float32 [K]; every class must occur."""
  labels = np.asarray(train_labels).astype(np.int64).reshape(-1)
  if labels.size == 0:
    raise ValueError('class_log_prior: no training labels.')
  if labels.min() < 0 or labels.max() >= num_classes:
    raise ValueError(f'class_log_prior: labels must lie in [0, {num_classes}), got '
                     f'[{labels.min()}, {labels.max()}].')
  counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
  if (counts == 0).any():
    missing = np.flatnonzero(counts == 0)[:10].tolist()
    raise ValueError(f'class_log_prior: classes {missing} have no training samples, so '
                     'log(prior) is -inf; pass an explicit prior= instead.')
  return np.log(counts / counts.sum()).astype(np.float32)


def adjust_logits(logits: Array, log_prior: Array, logit_adjust_tau: float = 1.0) -> Array:
  """Menon et al.'s logit adjustment z + logit_adjust_tau * log(pi), broadcast over the batch."""
  return logits.astype(jnp.float32) + logit_adjust_tau * jnp.asarray(log_prior, jnp.float32)


def kd_per_sample(student_logits: Array, teacher_logits: Array, *,
                  temperature: float = 4.0) -> Array:
  """tau^2 KL(p_t^tau || p_s^tau) per sample [N]; its batch mean is `losses.kd`."""
  chex.assert_rank([student_logits, teacher_logits], 2)
  chex.assert_equal_shape([student_logits, teacher_logits])
  teacher_logits = jax.lax.stop_gradient(teacher_logits)
  log_ps = jax.nn.log_softmax(student_logits.astype(jnp.float32) / temperature, axis=-1)
  log_pt = jax.nn.log_softmax(teacher_logits.astype(jnp.float32) / temperature, axis=-1)
  return temperature ** 2 * jnp.sum(jnp.exp(log_pt) * (log_pt - log_ps), axis=-1)


def kd_logit_adjusted(student_logits: Array, teacher_logits: Array, log_prior: Array, *,
                      temperature: float = 4.0, logit_adjust_tau: float = 1.0) -> Array:
  """tau^2 KL(p_t^tau || softmax((z_s + s log pi) / tau)), sum over classes, mean over batch.

  Args:
    student_logits: [N, K].
    teacher_logits: [N, K]; no gradient flows into them.
    log_prior: [K] log class prior.
    temperature: softmax temperature tau.
    logit_adjust_tau: scale s of the prior offset (0 gives plain KD).

  Returns:
    A scalar.
  """
  z_s = adjust_logits(student_logits, log_prior, logit_adjust_tau)
  return jnp.mean(kd_per_sample(z_s, teacher_logits, temperature=temperature))


# ----------------------------------------------------------------------------
# Registration

def _log_prior(info: BuildInfo, prior) -> tuple[float, ...]:
  k = info.num_classes
  if prior is not None:
    p = np.asarray(prior, np.float64).reshape(-1)
    if p.shape != (k,) or not (p > 0).all():
      raise ValueError(f'kd: prior must be {k} positive class frequencies, got {prior!r}.')
    log_prior = np.log(p / p.sum())
  elif info.train_labels is not None:
    log_prior = class_log_prior(info.train_labels, k)
  else:
    raise ValueError('kd: logit adjustment needs the class prior, and this dataset does not '
                     'expose its training labels; pass the class frequencies as prior=[...].')
  return tuple(float(v) for v in log_prior)  # a constant of the traced step


@register_method('kd', family='logits', paper='Hinton et al. 2015, Distilling the '
                 'Knowledge in a Neural Network; logit adjustment: Menon et al. 2021 '
                 '(IPWD appendix 2.3)')
def build_kd(info: BuildInfo, *, weight: float = 0.9, temperature: float = 4.0,
             logit_adjust_tau: float = 0.0, prior: Sequence[float] | None = None) -> Term:
  """Hinton KD: tau^2 KL(p_t || p_s) on the logits (RD: weight 0.9, tau 4, ce 0.1).

  logit_adjust_tau != 0: KD + LA, the student logits inside the KL carry
  logit_adjust_tau * log(prior); prior: class frequencies [K] (normalised
  here), default estimated from the training labels.
  """
  checks.check_logits(info)
  checks.positive('kd', temperature=temperature)
  if not isinstance(logit_adjust_tau, (int, float)):
    raise ValueError(f'kd: logit_adjust_tau must be a number, got {logit_adjust_tau!r}.')
  if prior is not None and not logit_adjust_tau:
    raise ValueError('kd: prior is only used with logit_adjust_tau != 0; set both.')
  log_prior = _log_prior(info, prior) if logit_adjust_tau else None

  def student(ctx: Context):
    z = ctx.student['logits']
    if log_prior is None:
      return z
    return adjust_logits(z, jnp.asarray(log_prior, jnp.float32), logit_adjust_tau)

  def loss(ctx: Context):
    if log_prior is None:  # the shared primitive, bit for bit
      return losses.kd(ctx.student['logits'], ctx.teacher['logits'], temperature=temperature)
    return jnp.mean(kd_per_sample(student(ctx), ctx.teacher['logits'], temperature=temperature))

  def per_sample(ctx: Context):
    return kd_per_sample(student(ctx), ctx.teacher['logits'], temperature=temperature)
  return Term(name='kd', method='kd', weight=float(weight), loss=no_aux(loss),
              per_sample=no_aux(per_sample))
