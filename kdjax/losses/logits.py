"""Logit-based distillation losses as pure functions.

Synopsis:
  Every function takes student logits [N, K] (and teacher logits or labels),
  returns a scalar, and wraps teacher inputs in `stop_gradient`. Reductions
  follow the reference code named in each docstring (see METHODS.md section
  1), so the published loss weights carry over unchanged.

      loss = kd(student_logits, teacher_logits, temperature=4.0)
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

Array = jax.Array


def _check_pair(student_logits, teacher_logits):
  chex.assert_rank([student_logits, teacher_logits], 2)
  chex.assert_equal_shape([student_logits, teacher_logits])


def kd(student_logits: Array, teacher_logits: Array, *, temperature: float = 4.0) -> Array:
  """Hinton KD: tau^2 * KL(p_t^tau || p_s^tau), summed over classes, mean over batch.

  RD `DistillKL`: `KLDiv(log p_s, p_t, reduction='sum') * tau^2 / N`.

  Args:
    student_logits: [N, K].
    teacher_logits: [N, K]; no gradient flows into them.
    temperature: softmax temperature tau.

  Returns:
    A scalar.
  """
  _check_pair(student_logits, teacher_logits)
  teacher_logits = jax.lax.stop_gradient(teacher_logits)
  log_ps = jax.nn.log_softmax(student_logits.astype(jnp.float32) / temperature, axis=-1)
  log_pt = jax.nn.log_softmax(teacher_logits.astype(jnp.float32) / temperature, axis=-1)
  pt = jnp.exp(log_pt)
  kl = jnp.sum(pt * (log_pt - log_ps), axis=-1)
  return temperature ** 2 * jnp.mean(kl)


def dkd(student_logits: Array, teacher_logits: Array, labels: Array, *, alpha: float = 1.0,
        beta: float = 8.0, temperature: float = 4.0) -> Array:
  """Decoupled KD (mdistiller `dkd_loss`): alpha * TCKD + beta * NCKD.

  TCKD = tau^2 * KL([p_t,gt, 1-p_t,gt] || [p_s,gt, 1-p_s,gt]), batchmean.
  NCKD = tau^2 * KL(q_t || q_s), batchmean, where q = softmax(z/tau - 1000*gt_mask)
  is the distribution over the non-target classes (the reference's mask trick).
  The binary log-probabilities are computed with log-sum-exp instead of
  log(sum p), which equals the reference where it is finite and stays finite
  where the reference gives log(0).

  Args:
    student_logits: [N, K].
    teacher_logits: [N, K]; no gradient flows into them.
    labels: [N] integer class indices.
    alpha: TCKD weight.
    beta: NCKD weight.
    temperature: tau.

  Returns:
    A scalar.
  """
  _check_pair(student_logits, teacher_logits)
  chex.assert_rank(labels, 1)
  chex.assert_equal_shape_prefix([student_logits, labels], 1)
  teacher_logits = jax.lax.stop_gradient(teacher_logits)
  gt_mask = jax.nn.one_hot(labels, student_logits.shape[-1], dtype=jnp.float32)

  def parts(z):
    z = z.astype(jnp.float32) / temperature
    lse_all = jax.nn.logsumexp(z, axis=-1)
    log_p_gt = jnp.sum(z * gt_mask, axis=-1) - lse_all
    masked = z - 1000.0 * gt_mask
    log_p_other = jax.nn.logsumexp(masked, axis=-1) - lse_all
    log_binary = jnp.stack([log_p_gt, log_p_other], axis=-1)
    log_q = jax.nn.log_softmax(masked, axis=-1)
    return log_binary, log_q

  log_bs, log_qs = parts(student_logits)
  log_bt, log_qt = parts(teacher_logits)
  n = student_logits.shape[0]
  tckd = jnp.sum(jnp.exp(log_bt) * (log_bt - log_bs)) / n
  nckd = jnp.sum(jnp.exp(log_qt) * (log_qt - log_qs)) / n
  return temperature ** 2 * (alpha * tckd + beta * nckd)


def soft_cross_entropy(student_logits: Array, target_probs: Array, *,
                       temperature: float = 1.0) -> Array:
  """Soft cross-entropy -mean_n sum_k q_nk log softmax(z_n / tau)_k, no tau^2.

  As in BSS (`L_soft`, tau=3 in the official code) and PS-KD (tau=1).

  Args:
    student_logits: [N, K].
    target_probs: [N, K] target distribution; no gradient flows into it.
    temperature: tau applied to the student logits only.

  Returns:
    A scalar.
  """
  _check_pair(student_logits, target_probs)
  q = jax.lax.stop_gradient(target_probs).astype(jnp.float32)
  log_p = jax.nn.log_softmax(student_logits.astype(jnp.float32) / temperature, axis=-1)
  return -jnp.mean(jnp.sum(q * log_p, axis=-1))


def label_smoothing_kd(student_logits: Array, labels: Array, num_classes: int, *,
                       correct_prob: float = 0.99, temperature: float = 20.0,
                       multiplier: float = 100.0, paper_form: bool = False) -> Array:
  """Tf-KD's virtual-teacher regulariser (Yuan et al. 2020, `loss_kd_regularization`).

  The virtual teacher p^d puts `correct_prob` on the label and
  (1 - correct_prob)/(K - 1) on every other class.

  Official-code form (default): target = softmax(p^d / tau) -- the softmax is
  applied to the *probabilities* -- and the student is not temperature-scaled:
  multiplier * KLDiv(log softmax(z), target) with PyTorch's default
  elementwise-mean reduction over N*K (= batchmean / K).

  Paper form (`paper_form=True`): multiplier * KL(p^d_tau || p_tau), batchmean,
  with p^d_tau = softmax(log p^d / tau) and p_tau = softmax(z / tau); use
  multiplier=1 for the paper's exact term.

  The (1 - alpha) CE mixing is not included: the config sets
  ce_weight = 1 - alpha and the term weight = alpha.

  Args:
    student_logits: [N, K].
    labels: [N] integer class indices.
    num_classes: K (must equal the logits' last dimension, and be >= 2).
    correct_prob: probability of the label under the virtual teacher.
    temperature: tau.
    multiplier: m, the official code's multiplier.
    paper_form: use the paper's KL instead of the official code's.

  Returns:
    A scalar.
  """
  chex.assert_rank([student_logits, labels], [2, 1])
  chex.assert_equal_shape_prefix([student_logits, labels], 1)
  if student_logits.shape[-1] != num_classes or num_classes < 2:
    raise ValueError(f'label_smoothing_kd: logits have {student_logits.shape[-1]} classes, '
                     f'num_classes={num_classes} (need equal and >= 2).')
  onehot = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
  p_d = onehot * correct_prob + (1.0 - onehot) * (1.0 - correct_prob) / (num_classes - 1)
  z = student_logits.astype(jnp.float32)
  if paper_form:
    log_target = jax.nn.log_softmax(jnp.log(p_d) / temperature, axis=-1)
    log_p = jax.nn.log_softmax(z / temperature, axis=-1)
    kl = jnp.sum(jnp.exp(log_target) * (log_target - log_p), axis=-1)
    return multiplier * jnp.mean(kl)
  log_target = jax.nn.log_softmax(p_d / temperature, axis=-1)
  log_p = jax.nn.log_softmax(z, axis=-1)
  return multiplier * jnp.mean(jnp.exp(log_target) * (log_target - log_p))


def weighted_soft_label_weights(student_logits: Array, teacher_logits: Array,
                                labels: Array) -> Array:
  """WSLD per-sample weights w = 1 - exp(-max(CE_s / (CE_t + 1e-7), 0)).

  Computed at tau=1 on stop-gradient logits, as in the official WSLD code.

  Args:
    student_logits: [N, K].
    teacher_logits: [N, K].
    labels: [N] integer class indices.

  Returns:
    [N] weights in [0, 1), without gradient.
  """
  _check_pair(student_logits, teacher_logits)
  chex.assert_rank(labels, 1)
  chex.assert_equal_shape_prefix([student_logits, labels], 1)
  zs = jax.lax.stop_gradient(student_logits).astype(jnp.float32)
  zt = jax.lax.stop_gradient(teacher_logits).astype(jnp.float32)
  onehot = jax.nn.one_hot(labels, zs.shape[-1], dtype=jnp.float32)
  ce_s = -jnp.sum(onehot * jax.nn.log_softmax(zs, axis=-1), axis=-1)
  ce_t = -jnp.sum(onehot * jax.nn.log_softmax(zt, axis=-1), axis=-1)
  ratio = jnp.maximum(ce_s / (ce_t + 1e-7), 0.0)
  return 1.0 - jnp.exp(-ratio)


def wsld(student_logits: Array, teacher_logits: Array, labels: Array, *,
         temperature: float = 2.0) -> Array:
  """Weighted soft-label distillation (Zhou et al. 2021, official ImageNet code).

  loss = tau^2 * mean_n[w_n * (-sum_k p_t^tau log p_s^tau)], with w from
  `weighted_soft_label_weights`.

  Args:
    student_logits: [N, K].
    teacher_logits: [N, K]; no gradient flows into them.
    labels: [N] integer class indices.
    temperature: tau (official ImageNet: 2).

  Returns:
    A scalar.
  """
  _check_pair(student_logits, teacher_logits)
  teacher_logits = jax.lax.stop_gradient(teacher_logits)
  w = weighted_soft_label_weights(student_logits, teacher_logits, labels)
  pt = jax.nn.softmax(teacher_logits.astype(jnp.float32) / temperature, axis=-1)
  log_ps = jax.nn.log_softmax(student_logits.astype(jnp.float32) / temperature, axis=-1)
  soft = -jnp.sum(pt * log_ps, axis=-1)
  return temperature ** 2 * jnp.mean(w * soft)
