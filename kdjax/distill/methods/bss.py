"""Boundary-supporting samples (Heo et al. 2019, Knowledge Distillation with Adversarial Samples
Supporting Decision Boundary; official `AttackBSS`).

Formula:
  L = r(e) L_soft(x) + r_a(e) L_soft(x_adv),  L_soft = -(1/n) sum p_t^tau log p_s^tau (no tau^2)
  r(e) = max(3 (1 - e/E), 0) + 1,  r_a(e) = max(2 (1 - 4e/(3E)), 0)
x_adv: targeted L2 attack on the teacher (10 steps of 0.3, clamp 2.5) moving
correctly classified base samples toward a sampled non-top-1 class. tau 3.
The term declares extra student and teacher passes (`Needs`).

  dict(method='bss')       # ce_weight 1
"""

from __future__ import annotations

from typing import Callable

import chex
import jax
import jax.numpy as jnp

from kdjax import losses
from kdjax.distill import checks
from kdjax.distill.api import BuildInfo, Context, Needs, Term, register_method

Array = jax.Array


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
    return losses.soft_cross_entropy(student_logits, q, temperature=temperature)
  log_p = jax.nn.log_softmax(student_logits.astype(jnp.float32) / temperature, -1)
  rows = -jnp.sum(q * log_p, axis=-1)
  weights = weights.astype(jnp.float32)
  return jnp.sum(weights * rows) / jnp.maximum(jnp.sum(weights), 1.0)


def select_base_samples(teacher_logits: Array, student_logits: Array, labels: Array,
                        attack_size: int, *, require_student_correct: bool = True
                        ) -> tuple[Array, Array]:
  """BSS base samples: correctly classified ones, top `attack_size` by the distill score.

  Eligible: teacher argmax == label (official code), and also student argmax ==
  label when `require_student_correct` (the paper and docs/methods.md). Score =
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


@register_method('bss', family='logits', paper='Heo et al. 2019, Knowledge Distillation with '
                 'Adversarial Samples Supporting Decision Boundary')
def build_bss(info: BuildInfo, *, weight: float = 1.0, temperature: float = 3.0,
              attack_size: int = 64, steps: int = 10, step_size: float = 0.3,
              clamp: float = 2.5, base: str = 'both', per_epoch_schedule: bool = True) -> Term:
  """BSS: r(e) L_soft(x) + r_a(e) L_soft(x_adv) with adversarial boundary-supporting samples.

  Defaults are the official CIFAR-10 script (tau 3, attack size 64, 10 steps of
  0.3, clamp 2.5); "KD beyond model compression" uses tau 4, attack size 32. Base samples: correct for
  teacher and student (base='both', paper / docs/methods.md) or for the teacher only
  (base='teacher', the official code), top `attack_size` by the distill score;
  the target class is sampled from the teacher's non-top-1 classes. The
  schedules use the 1-indexed epoch floor(progress) + 1 as the code does
  (per_epoch_schedule=False: continuous progress). The attack is skipped (no
  compute) once r_a = 0, i.e. after 75% of the stage. CE comes from the step
  (ce_weight 1).

  Fixed shapes: `min(attack_size, batch)` samples are always attacked and run
  through both networks; slots without an eligible sample are masked out of the
  loss, but still enter the student's train-mode BatchNorm statistics of that
  extra pass (the official code passes only the eligible ones).
  """
  s, t = info.feature('student', 'logits'), info.feature('teacher', 'logits')
  if tuple(s.shape[1:]) != tuple(t.shape[1:]):
    raise ValueError(f'bss: student logits {tuple(s.shape)} and teacher logits {tuple(t.shape)} differ.')
  checks.positive('bss', temperature=temperature, step_size=step_size, clamp=clamp)
  if not (isinstance(attack_size, int) and attack_size >= 1):
    raise ValueError(f'bss: attack_size must be an int >= 1, got {attack_size!r}.')
  if not (isinstance(steps, int) and steps >= 1):
    raise ValueError(f'bss: steps must be an int >= 1, got {steps!r}.')
  if base not in ('both', 'teacher'):
    raise ValueError(f"bss: base must be 'both' (paper) or 'teacher' (official code), got {base!r}.")

  def loss(aux, ctx: Context):
    del aux
    zs, zt = ctx.student['logits'], jax.lax.stop_gradient(ctx.teacher['logits'])
    epoch = jnp.floor(ctx.progress) + 1.0 if per_epoch_schedule else ctx.progress
    r = bss_ratio(epoch, ctx.stage_epochs)
    ra = bss_attack_ratio(epoch, ctx.stage_epochs)
    clean = bss_soft_ce(zs, zt, temperature=temperature)
    idx, valid = select_base_samples(zt, zs, ctx.labels, attack_size,
                                        require_student_correct=(base == 'both'))

    def attacked(_):
      x, t_logits = ctx.images[idx], zt[idx]
      target = sample_target_class(ctx.rng, t_logits)
      gt = jnp.argmax(t_logits, -1)
      x_adv = bss_attack(lambda xx: ctx.apply_teacher(xx)[0], x, valid, target, gt,
                            steps=steps, step_size=step_size, clamp=clamp)
      t_adv = jax.lax.stop_gradient(ctx.apply_teacher(x_adv)[0])
      s_adv = ctx.apply_student(x_adv)[0]
      return bss_soft_ce(s_adv, t_adv, temperature=temperature, weights=valid)

    run = (ra > 0) & jnp.any(valid)
    adv = jax.lax.cond(run, attacked, lambda _: jnp.zeros((), jnp.float32), None)
    value = r * clean + ra * adv
    return value, {'ratio': r, 'attack_ratio': ra, 'clean': clean, 'adversarial': adv,
                   'attacked': jnp.sum(valid.astype(jnp.float32)) * run}, {}
  return Term(name='bss', method='bss', weight=float(weight), loss=loss,
              needs=Needs(images=True, student_pass=True, teacher_pass=True))
