"""Online and self-distillation losses: DML, ONE, Tf-KD (self), BSS.

Synopsis:
  Pure functions on logits (and, for BSS's attack, an `apply_fn`), written from
  METHODS.md section 1 and the official code named in each docstring:

      dml_loss(member_logits, labels, temperature=1.0)       DML, cohort of M
      one_loss(branch_logits, ensemble_logits, labels, ...)  ONE
      one_rampup(progress, rampup_epochs=80)                 ONE's w(e)
      tfkd_self(student_logits, teacher_logits, ...)         Tf-KD self-training
      bss_soft_ce / bss_ratio / bss_attack_ratio             BSS loss and schedules
      select_base_samples / sample_target_class / bss_attack BSS's adversarial samples

  Every distribution used as a target is under `stop_gradient`. Reductions
  follow the reference code so published weights carry over.
"""

from __future__ import annotations

from typing import Callable, Sequence

import chex
import jax
import jax.numpy as jnp
import optax

from kdjax.losses.logits import kd, soft_cross_entropy

Array = jax.Array


def _ce(logits: Array, labels: Array) -> Array:
  """Mean softmax cross-entropy with integer labels."""
  return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels).mean()


# ----------------------------------------------------------------------------
# DML

def dml_loss(member_logits: Sequence[Array], labels: Array, *, temperature: float = 1.0,
             tau_squared: bool = False, reduction: str = 'mean', kl_weight: float = 1.0,
             include_ce: bool = True) -> tuple[Array, dict[str, Array]]:
  """Deep Mutual Learning (Zhang et al. 2018), summed over the cohort.

  For member i: L_i = CE_i + kl_weight * c * sum_{j != i} KL(p_j || p_i), with
  p = softmax(z / tau), p_j a constant target (stop-gradient), KL batchmean,
  c = 1/(M - 1) for reduction='mean' (paper, Alg. 1 with K_n - 1) or 1 for
  'sum' (the official TF code), times tau^2 when `tau_squared`.
  Returns sum_i L_i: because every target is stopped, the gradient of the sum
  with respect to member i's parameters is exactly the gradient of L_i, so the
  same scalar serves the simultaneous update (official TF) and the alternating
  one (paper; the step's `update_groups`).

  Args:
    member_logits: M >= 2 arrays [N, K].
    labels: [N] integer labels.
    temperature: tau (paper 1; seed 002 4).
    tau_squared: multiply the KL by tau^2 (Hinton's gradient-scale convention).
    reduction: 'mean' over the M - 1 peers, or 'sum'.
    kl_weight: multiplier of the mimicry term.
    include_ce: add each member's CE (then the config's ce_weight should be 0).

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
  # `kd` is tau^2 * KL(p_j || p_i) (batchmean) with p_j stopped; undo tau^2 unless asked.
  scale = (1.0 / (m - 1) if reduction == 'mean' else 1.0) / (1.0 if tau_squared else temperature ** 2)
  total, metrics = jnp.zeros(()), {}
  for i, zi in enumerate(member_logits):
    kl = scale * sum(kd(zi, zj, temperature=temperature)
                     for j, zj in enumerate(member_logits) if j != i)
    metrics[f'kl{i}'] = kl
    total = total + kl_weight * kl
    if include_ce:
      ce = _ce(zi, labels)
      metrics[f'ce{i}'] = ce
      total = total + ce
  return total, metrics


# ----------------------------------------------------------------------------
# ONE

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


# ----------------------------------------------------------------------------
# Tf-KD self-training

def tfkd_self(student_logits: Array, teacher_logits: Array, *, temperature: float = 6.0,
              multiplier: float = 50.0) -> Array:
  """Tf-KD self-training term (Yuan et al. 2020, official `loss_kd_self`).

  multiplier * tau^2 * KLDivLoss(log_softmax(z_s/tau), softmax(z_t/tau)) with
  PyTorch's default elementwise-mean reduction over N*K (= batchmean / K;
  0 log 0 = 0). The (1 - alpha) CE and alpha factors are the config's
  ce_weight and the term weight.
  """
  # Elementwise mean over N*K = (sum over classes, mean over the batch) / K = kd / K.
  return multiplier * kd(student_logits, teacher_logits, temperature=temperature) / \
      student_logits.shape[-1]


# ----------------------------------------------------------------------------
# BSS

def bss_ratio(epoch: Array, total_epochs: float) -> Array:
  """r(e) = max(3 (1 - e/E), 0) + 1: the clean-sample soft-CE weight, 4 -> 1."""
  return jnp.maximum(3.0 * (1.0 - epoch / total_epochs), 0.0) + 1.0


def bss_attack_ratio(epoch: Array, total_epochs: float) -> Array:
  """r_a(e) = max(2 (1 - 4e/(3E)), 0): the adversarial soft-CE weight, 2 -> 0 at 0.75 E."""
  return jnp.maximum(2.0 * (1.0 - 4.0 * epoch / (3.0 * total_epochs)), 0.0)


def bss_soft_ce(student_logits: Array, teacher_logits: Array, *, temperature: float = 3.0,
                weights: Array | None = None) -> Array:
  """BSS's L_soft: -(1/n) sum p_t^tau log p_s^tau, no tau^2; n = sum(weights) if given.

  `weights` [N] (0/1) restricts the mean to a subset (the attacked samples);
  an empty subset gives 0.
  """
  chex.assert_rank([student_logits, teacher_logits], 2)
  chex.assert_equal_shape([student_logits, teacher_logits])
  q = jax.nn.softmax(jax.lax.stop_gradient(teacher_logits).astype(jnp.float32) / temperature, -1)
  if weights is None:
    return soft_cross_entropy(student_logits, q, temperature=temperature)
  log_p = jax.nn.log_softmax(student_logits.astype(jnp.float32) / temperature, -1)
  rows = -jnp.sum(q * log_p, axis=-1)
  weights = weights.astype(jnp.float32)
  return jnp.sum(weights * rows) / jnp.maximum(jnp.sum(weights), 1.0)


def select_base_samples(teacher_logits: Array, student_logits: Array, labels: Array,
                        attack_size: int, *, require_student_correct: bool = True
                        ) -> tuple[Array, Array]:
  """BSS base samples: correctly classified ones, top `attack_size` by the distill score.

  Eligible: teacher argmax == label (official code), and also student argmax ==
  label when `require_student_correct` (the paper and METHODS.md). Score =
  sum_{k != y} (p_t,k - p_s,k)^2 at tau = 1; the code keeps the highest scores
  when more than `attack_size` are eligible, all of them otherwise.

  Returns:
    (idx [k], valid [k] bool) with k = min(attack_size, N): batch indices
    sorted by score, and which of them are eligible (fixed shapes for jit;
    invalid slots hold arbitrary ineligible samples and must be masked out).
  """
  chex.assert_rank([teacher_logits, student_logits, labels], [2, 2, 1])
  zt = jax.lax.stop_gradient(teacher_logits).astype(jnp.float32)
  zs = jax.lax.stop_gradient(student_logits).astype(jnp.float32)
  eligible = jnp.argmax(zt, -1) == labels
  if require_student_correct:
    eligible = eligible & (jnp.argmax(zs, -1) == labels)
  diff = (jax.nn.softmax(zt, -1) - jax.nn.softmax(zs, -1)) ** 2
  onehot = jax.nn.one_hot(labels, zt.shape[-1], dtype=jnp.float32)
  score = jnp.sum(diff * (1.0 - onehot), axis=-1)
  k = min(int(attack_size), zt.shape[0])
  _, idx = jax.lax.top_k(jnp.where(eligible, score, -jnp.inf), k)
  return idx, eligible[idx]


def sample_target_class(key: Array, teacher_logits: Array) -> Array:
  """BSS target classes: one non-top-1 class per sample, with probability ∝ p_t.

  Inverse-CDF sampling over the teacher's probabilities sorted in descending
  order without the top-1 (as the official code): u ~ U(0, sum), first class
  whose cumulative probability reaches u. Never returns the teacher's argmax.
  """
  chex.assert_rank(teacher_logits, 2)
  p = jax.nn.softmax(jax.lax.stop_gradient(teacher_logits).astype(jnp.float32), -1)
  order = jnp.argsort(-p, axis=-1)
  rest_idx = order[:, 1:]
  rest_p = jnp.take_along_axis(p, rest_idx, axis=-1)
  cdf = jnp.cumsum(rest_p, axis=-1)
  u = jax.random.uniform(key, (p.shape[0], 1)) * cdf[:, -1:]
  first = jnp.argmax(cdf >= u, axis=-1)
  return jnp.take_along_axis(rest_idx, first[:, None], axis=-1)[:, 0]


def bss_attack(apply_fn: Callable[[Array], Array], x: Array, base_mask: Array, target: Array,
               gt: Array, *, steps: int = 10, step_size: float = 0.3, clamp: float = 2.5) -> Array:
  """BSS's targeted L2 attack on a (frozen) network (official `AttackBSS.run`, norm 2).

  Each step: g = d(z_target - z_gt)/dx per sample; samples in `base_mask` whose
  prediction is still `gt` move by step_size * (z_gt - z_target + 1e-4) * g/||g||_2;
  all samples in `base_mask` are clamped to [-clamp, clamp] (normalised-pixel
  space); the others are returned unchanged. A `lax.fori_loop` runs the steps,
  so the attack compiles once. The result carries no gradient.

  Args:
    apply_fn: x -> logits [N, K] (eval mode, per-sample independent).
    x: [N, ...] inputs.
    base_mask: [N] bool, which samples to attack.
    target: [N] target classes.
    gt: [N] classes to move away from (the code: argmax at step 0).
    steps, step_size, clamp: as in the code (10, 0.3, 2.5).

  Returns:
    The adversarial inputs, shape of x.
  """
  chex.assert_rank([base_mask, target, gt], 1)
  x = jax.lax.stop_gradient(x)
  n = x.shape[0]
  bshape = (n,) + (1,) * (x.ndim - 1)

  def margin(xx):
    z = apply_fn(xx).astype(jnp.float32)
    zt = jnp.take_along_axis(z, target[:, None], -1)[:, 0]
    zg = jnp.take_along_axis(z, gt[:, None], -1)[:, 0]
    return jnp.sum(zt - zg), (z, zt, zg)

  grad_fn = jax.grad(margin, has_aux=True)

  def body(_, xx):
    g, (z, zt, zg) = grad_fn(xx)
    active = base_mask & (jnp.argmax(z, -1) == gt)
    norm = jnp.sqrt(jnp.sum(g.reshape(n, -1) ** 2, axis=-1))
    scale = step_size * active.astype(jnp.float32) * (zg - zt + 1e-4) / jnp.maximum(norm, 1e-12)
    moved = jnp.clip(xx + scale.reshape(bshape) * g, -clamp, clamp)
    return jnp.where(base_mask.reshape(bshape), moved, xx)

  return jax.lax.stop_gradient(jax.lax.fori_loop(0, steps, body, x))


__all__ = ['bss_attack', 'bss_attack_ratio', 'bss_ratio', 'bss_soft_ce', 'dml_loss', 'one_kl',
           'one_loss', 'one_rampup', 'sample_target_class', 'select_base_samples', 'tfkd_self']
