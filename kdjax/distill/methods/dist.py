"""DIST (Huang et al. 2022, Knowledge Distillation from A Stronger Teacher).

Synopsis:
  dict(method='dist', weight=1.0, beta=2.0, gamma=2.0, temperature=4.0)   CIFAR-100
  dict(method='dist', weight=1.0, beta=1.0, gamma=1.0, temperature=1.0)   ImageNet

Formula (paper eqs. 4-6; official `DIST` loss in hunto/image_classification_sota):
  Y_s = softmax(Z_s / tau), Y_t = softmax(Z_t / tau)                  [N, K]
  rho(a, b) = <a - mean(a), b - mean(b)> / (|a - mean(a)| |b - mean(b)| + eps)
  inter = 1 - mean_n rho(Y_s[n, :], Y_t[n, :])      (relation across classes)
  intra = 1 - mean_k rho(Y_s[:, k], Y_t[:, k])      (relation across the batch)
  L = tau^2 (beta inter + gamma intra),  eps = 1e-8.
The config's ce_weight is the CE factor (1 in the paper's CIFAR-100 and
ImageNet settings). Pearson correlation is invariant to shifting and positive
scaling of each row/column, so DIST does not ask the student to match the
teacher's probabilities exactly, only their ranking structure.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from kdjax import losses
from kdjax.distill.api import BuildInfo, Context, Term, no_aux, register_method

Array = jax.Array


# ----------------------------------------------------------------------------
# Pure losses

def _safe_norm(x: Array, axis: int) -> Array:
  """L2 norm whose gradient at 0 is 0 (as PyTorch's `norm` backward), not NaN."""
  sq = jnp.sum(x * x, axis=axis)
  pos = sq > 0
  return jnp.where(pos, jnp.sqrt(jnp.where(pos, sq, 1.0)), 0.0)


def pearson_rows(a: Array, b: Array, eps: float = 1e-8, w: Array | None = None) -> Array:
  """Pearson correlation of matching rows of a, b [N, K] -> [N] (official eps form).

  With `w` [K] (0/1) only the columns with w = 1 enter (means and sums).
  """
  if w is None:
    a = a - jnp.mean(a, axis=1, keepdims=True)
    b = b - jnp.mean(b, axis=1, keepdims=True)
  else:
    count = jnp.maximum(jnp.sum(w), 1.0)
    a = (a - jnp.sum(a * w, axis=1, keepdims=True) / count) * w
    b = (b - jnp.sum(b * w, axis=1, keepdims=True) / count) * w
  return jnp.sum(a * b, axis=1) / (_safe_norm(a, 1) * _safe_norm(b, 1) + eps)


def inter_class_relation(y_s: Array, y_t: Array, eps: float = 1e-8,
                         mask: Array | None = None) -> Array:
  """1 - mean over samples of the Pearson correlation of their class distributions.

  With `mask` [N] (0/1) the mean is over the valid samples.
  """
  if mask is None:
    return 1.0 - jnp.mean(pearson_rows(y_s, y_t, eps))
  return 1.0 - losses.masked_mean(pearson_rows(y_s, y_t, eps), mask)


def intra_class_relation(y_s: Array, y_t: Array, eps: float = 1e-8,
                         mask: Array | None = None) -> Array:
  """1 - mean over classes of the Pearson correlation of their batch columns.

  With `mask` [N] (0/1) each column's correlation is over the valid samples.
  """
  if mask is None:
    return inter_class_relation(y_s.T, y_t.T, eps)
  w = jnp.asarray(mask, jnp.float32)
  return 1.0 - jnp.mean(pearson_rows(y_s.T, y_t.T, eps, w))


def dist_loss(student_logits: Array, teacher_logits: Array, *, beta: float = 2.0,
              gamma: float = 2.0, temperature: float = 4.0, eps: float = 1e-8) -> Array:
  """DIST: tau^2 (beta inter + gamma intra) on softened probabilities (see module doc).

  Args:
    student_logits: [N, K].
    teacher_logits: [N, K]; no gradient flows into them.
    beta: weight of the inter-class (per-sample) relation.
    gamma: weight of the intra-class (per-class, across the batch) relation.
    temperature: tau.
    eps: the reference's denominator guard.

  Returns:
    A scalar; 0 when the student's logits equal the teacher's (up to eps).
  """
  chex.assert_rank([student_logits, teacher_logits], 2)
  chex.assert_equal_shape([student_logits, teacher_logits])
  teacher_logits = jax.lax.stop_gradient(teacher_logits)
  y_s = jax.nn.softmax(student_logits.astype(jnp.float32) / temperature, axis=1)
  y_t = jax.nn.softmax(teacher_logits.astype(jnp.float32) / temperature, axis=1)
  inter = inter_class_relation(y_s, y_t, eps)
  intra = intra_class_relation(y_s, y_t, eps)
  return temperature ** 2 * (beta * inter + gamma * intra)


# ----------------------------------------------------------------------------
# Registration

@register_method('dist', family='logits', paper='Huang et al. 2022, Knowledge Distillation '
                 'from A Stronger Teacher (DIST)')
def build_dist(info: BuildInfo, *, weight: float = 1.0, beta: float = 2.0, gamma: float = 2.0,
               temperature: float = 4.0) -> Term:
  """DIST: Pearson inter- and intra-class relations of softened predictions (CIFAR: 2, 2, tau 4)."""
  s = info.feature('student', 'logits')
  t = info.feature('teacher', 'logits')
  if len(s.shape) != 2 or tuple(s.shape[1:]) != tuple(t.shape[1:]):
    raise ValueError(f'dist: needs [N, K] logits of equal class count, got student '
                     f'{tuple(s.shape)} and teacher {tuple(t.shape)}.')
  if not (isinstance(temperature, (int, float)) and temperature > 0):
    raise ValueError(f'dist: temperature must be a number > 0, got {temperature!r}.')
  for k, v in (('beta', beta), ('gamma', gamma)):
    if not (isinstance(v, (int, float)) and v >= 0):
      raise ValueError(f'dist: {k} must be a number >= 0, got {v!r}.')

  def loss(ctx: Context):
    y_s = jax.nn.softmax(ctx.student['logits'].astype(jnp.float32) / temperature, axis=1)
    y_t = jax.nn.softmax(jax.lax.stop_gradient(ctx.teacher['logits']).astype(jnp.float32)
                         / temperature, axis=1)
    inter = inter_class_relation(y_s, y_t, mask=ctx.mask)
    intra = intra_class_relation(y_s, y_t, mask=ctx.mask)
    value = temperature ** 2 * (beta * inter + gamma * intra)
    return value, {'inter': inter, 'intra': intra}
  return Term(name='dist', method='dist', weight=float(weight), loss=no_aux(loss), masked=True)
