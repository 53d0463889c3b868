"""Distances between per-sample factors: IE-KD's inheritance, exploration and reconstruction losses.

Synopsis:
  factor_distance(a, b, metric='l1', mask=None)        l1 | l2 | cos | partial_l2 | cka
  exploration_distance(a, b, metric='l1', mask=None)   the dis-similarity form of each
  linear_cka(a, b, mask=None)                          batch-level linear CKA (Gram form)
  reconstruction(x, y, norm='l1', mask=None)           auto-encoder loss

Sources: the IE-KD paper (Huang et al. 2021) eqs. (2)-(4) and the official code
aliyun/Revisiting-Knowledge-Distillation-an-Inheritance-and-Exploration-Framework
(`loss/factor_transfer.py`, `loss/reconstruction.py`). Every distance first
flattens each sample and L2-normalises it (`F.normalize(x.view(N, -1))`), then
reduces with a mean over N*D as the official `_factor_transfer`, i.e. the mean
over samples of the per-sample mean over D. With a 0/1 `mask` [N] (a masked
last batch) that outer mean runs over the valid rows, and linear CKA centres and
sums over them only, so each value equals that of the valid rows alone.
The IE-KD method (`kdjax.distill.methods.ie_kd`) is their user.

`linear_cka` here is the N x N Gram form (cheap for a training batch with large
D); `kdjax.analysis.similarity.linear_cka` is the feature-space form for
analysis sets with large N.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from kdjax.losses.features import l2_normalize
from kdjax.losses.masking import masked_mean

Array = jax.Array

METRICS = ('l1', 'l2', 'cos', 'partial_l2', 'cka')


def _flat_normalised(a: Array, b: Array) -> tuple[Array, Array]:
  chex.assert_equal_shape([a, b])
  a = l2_normalize(a.reshape(a.shape[0], -1).astype(jnp.float32))
  b = l2_normalize(b.reshape(b.shape[0], -1).astype(jnp.float32))
  return a, b


def linear_cka(a: Array, b: Array, eps: float = 1e-12, mask: Array | None = None) -> Array:
  """Linear CKA (Kornblith et al. 2019) between two batches of representations.

  With column-centred X [N, p], Y [N, q]:
  CKA = ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F), computed through the N x N
  Gram matrices (tr(K_X K_Y) = ||Y^T X||_F^2). 1 for identical inputs, invariant
  to isotropic scaling and orthogonal transforms of either side.
  With a 0/1 `mask` [N] the columns are centred over the rows with mask 1 and the
  other rows are zeroed: their Gram rows and columns vanish, so the value is the
  CKA of the valid rows alone.
  """
  x = a.reshape(a.shape[0], -1).astype(jnp.float32)
  y = b.reshape(b.shape[0], -1).astype(jnp.float32)
  if mask is None:
    x = x - x.mean(0, keepdims=True)
    y = y - y.mean(0, keepdims=True)
  else:
    w = mask.astype(jnp.float32)[:, None]
    n = jnp.maximum(jnp.sum(w), 1.0)
    x = (x - jnp.sum(x * w, 0, keepdims=True) / n) * w
    y = (y - jnp.sum(y * w, 0, keepdims=True) / n) * w
  kx, ky = x @ x.T, y @ y.T
  return jnp.sum(kx * ky) / jnp.sqrt(jnp.maximum(jnp.sum(kx * kx) * jnp.sum(ky * ky), eps))


def factor_distance(a: Array, b: Array, metric: str = 'l1', mask: Array | None = None) -> Array:
  """Similarity loss D(a, b) between per-sample L2-normalised flattened factors.

  l1:         mean |a^ - b^|                       (official NormLoss p=1, paper eq. 2)
  l2:         sqrt(mean (a^ - b^)^2)               (official NormLoss p=2)
  cos:        mean_n (1 - <a^_n, b^_n>)            (official CosLoss)
  partial_l2: mean (a^ - b^)^2 [a^ > b^ or b^ > 0] (OD's partial L2, b = target)
  cka:        1 - linear_cka(a, b)                  (the IE-KD paper Table 6a's "CKA"; batch-level)

  Args:
    a: student-side factor [N, ...].
    b: target factor of the same shape (not stopped here; callers decide).
    metric: one of METRICS.
    mask: optional 0/1 [N]: the means over samples run over the rows with mask 1.

  Returns:
    A scalar.
  """
  if metric == 'cka':
    chex.assert_equal_shape([a, b])
    return 1.0 - linear_cka(a, b, mask=mask)
  a, b = _flat_normalised(a, b)
  d = a - b
  if mask is not None:  # the same means, per sample first, then over the valid rows
    if metric == 'l1':
      return masked_mean(jnp.mean(jnp.abs(d), -1), mask)
    if metric == 'l2':
      return jnp.sqrt(jnp.maximum(masked_mean(jnp.mean(d * d, -1), mask), 1e-12))
    if metric == 'cos':
      return masked_mean(1.0 - jnp.sum(a * b, axis=-1), mask)
    if metric == 'partial_l2':
      keep = ((a > b) | (b > 0)).astype(jnp.float32)
      return masked_mean(jnp.mean(d * d * keep, -1), mask)
    raise ValueError(f'unknown IE-KD metric {metric!r}; known: {METRICS}.')
  if metric == 'l1':
    return jnp.mean(jnp.abs(d))
  if metric == 'l2':
    return jnp.sqrt(jnp.maximum(jnp.mean(d * d), 1e-12))
  if metric == 'cos':
    return jnp.mean(1.0 - jnp.sum(a * b, axis=-1))
  if metric == 'partial_l2':
    mask = ((a > b) | (b > 0)).astype(jnp.float32)
    return jnp.mean(d * d * mask)
  raise ValueError(f'unknown IE-KD metric {metric!r}; known: {METRICS}.')


def exploration_distance(a: Array, b: Array, metric: str = 'l1',
                         mask: Array | None = None) -> Array:
  """Dis-similarity loss: -D(a, b) for l1/l2/partial_l2, mean_n |cos(a_n, b_n)| for cos,
  linear CKA for cka.

  The cos form is the official CosLoss(negative=True) (orthogonality, the IE-KD paper
  Sec. 3.2); the others are the paper's negative distances (eq. 3). `mask` as in
  `factor_distance`.
  """
  if metric == 'cos':
    a, b = _flat_normalised(a, b)
    return masked_mean(jnp.abs(jnp.sum(a * b, axis=-1)), mask)
  if metric == 'cka':  # Table 6a "L1 + CKA": explore by lowering the CKA similarity
    return linear_cka(a, b, mask=mask)
  return -factor_distance(a, b, metric, mask)


def reconstruction(x: Array, y: Array, norm: str = 'l1', mask: Array | None = None) -> Array:
  """Auto-encoder reconstruction loss.

  'l1' = mean |x - y| (official RecLoss, default); 'l2' = mean (x - y)^2 (the
  paper's ||f - R(f)||^2, mean-reduced so the scale does not depend on the
  feature size). With a 0/1 `mask` [N]: the per-sample means, averaged over
  the rows with mask 1.
  """
  chex.assert_equal_shape([x, y])
  d = (x - y).astype(jnp.float32)
  if mask is not None and norm in ('l1', 'l2'):
    d = d.reshape(d.shape[0], -1)
    return masked_mean(jnp.mean(jnp.abs(d) if norm == 'l1' else d * d, -1), mask)
  if norm == 'l1':
    return jnp.mean(jnp.abs(d))
  if norm == 'l2':
    return jnp.mean(d * d)
  raise ValueError(f"unknown reconstruction norm {norm!r}; known: 'l1', 'l2'.")
