"""KD with logit adjustment (IPWD appendix, section 2.3; Menon et al. 2021, Long-tail
Learning via Logit Adjustment).

Synopsis:
  dict(method='kd_la', weight=0.9, temperature=4.0, la_tau=1.0)   with ce_weight = 0.1

Formula: with the class prior pi_k = n_k / N estimated from the training labels,
  z'_s = z_s + la_tau * log(pi)
  L = tau^2 * mean_n KL(softmax(z_t / tau) || softmax(z'_s / tau))
i.e. Hinton KD (RepDistiller's `DistillKL`) whose student logits carry Menon
et al.'s logit-adjusted-loss offset. The IPWD appendix only says the prior is
"applied to the student output when calculating the KL divergence"; adding
la_tau * log(pi) to the raw logits before the temperature follows Menon et al.'s
logit-adjusted loss (their default la_tau = 1). With a uniform prior the
offset is a constant per row and the loss equals plain KD.
"""

from __future__ import annotations

from typing import Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np

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


def adjust_logits(logits: Array, log_prior: Array, la_tau: float = 1.0) -> Array:
  """Menon et al.'s logit adjustment z + la_tau * log(pi), broadcast over the batch."""
  return logits.astype(jnp.float32) + la_tau * jnp.asarray(log_prior, jnp.float32)


def kd_logit_adjusted(student_logits: Array, teacher_logits: Array, log_prior: Array, *,
                      temperature: float = 4.0, la_tau: float = 1.0) -> Array:
  """tau^2 KL(p_t^tau || softmax((z_s + la_tau log pi) / tau)), sum over classes, mean over batch.

  Args:
    student_logits: [N, K].
    teacher_logits: [N, K]; no gradient flows into them.
    log_prior: [K] log class prior.
    temperature: softmax temperature tau.
    la_tau: scale of the prior offset (0 gives plain KD).

  Returns:
    A scalar.
  """
  chex.assert_rank([student_logits, teacher_logits], 2)
  chex.assert_equal_shape([student_logits, teacher_logits])
  teacher_logits = jax.lax.stop_gradient(teacher_logits)
  z_s = adjust_logits(student_logits, log_prior, la_tau)
  log_ps = jax.nn.log_softmax(z_s / temperature, axis=-1)
  log_pt = jax.nn.log_softmax(teacher_logits.astype(jnp.float32) / temperature, axis=-1)
  kl = jnp.sum(jnp.exp(log_pt) * (log_pt - log_ps), axis=-1)
  return temperature ** 2 * jnp.mean(kl)


# ----------------------------------------------------------------------------
# Registration

@register_method('kd_la', family='logits', paper='IPWD appendix (Niu et al. 2022) KD+LA; '
                 'Menon et al. 2021, Long-tail Learning via Logit Adjustment')
def build_kd_la(info: BuildInfo, *, weight: float = 0.9, temperature: float = 4.0,
                la_tau: float = 1.0, prior: Sequence[float] | None = None) -> Term:
  """KD with the training-label class prior added to the student logits inside the KL.

  prior: class frequencies [K] (normalised here); default: estimated from the
  training labels, which streamed datasets do not provide.
  """
  s = info.feature('student', 'logits')
  t = info.feature('teacher', 'logits')
  k = info.num_classes
  if len(s.shape) != 2 or s.shape[-1] != k or tuple(t.shape[1:]) != (k,):
    raise ValueError(f'kd_la: needs [N, {k}] logits, got student {tuple(s.shape)} and '
                     f'teacher {tuple(t.shape)}.')
  if not (isinstance(temperature, (int, float)) and temperature > 0):
    raise ValueError(f'kd_la: temperature must be a number > 0, got {temperature!r}.')
  if not isinstance(la_tau, (int, float)):
    raise ValueError(f'kd_la: la_tau must be a number, got {la_tau!r}.')
  if prior is not None:
    p = np.asarray(prior, np.float64).reshape(-1)
    if p.shape != (k,) or not (p > 0).all():
      raise ValueError(f'kd_la: prior must be {k} positive class frequencies, got {prior!r}.')
    log_prior = np.log(p / p.sum()).astype(np.float32)
  elif info.train_labels is not None:
    log_prior = class_log_prior(info.train_labels, k)
  else:
    raise ValueError('kd_la: this dataset does not expose its training labels; pass the '
                     'class frequencies as prior=[...].')
  log_prior = tuple(float(v) for v in log_prior)  # a constant of the traced step

  def loss(ctx: Context):
    return kd_logit_adjusted(ctx.student['logits'], ctx.teacher['logits'],
                             jnp.asarray(log_prior, jnp.float32), temperature=temperature,
                             la_tau=la_tau)
  return Term(name='kd_la', method='kd_la', weight=float(weight), loss=no_aux(loss))
