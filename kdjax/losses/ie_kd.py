"""IE-KD (seed 000): inheritance / exploration distances between factors, pure functions.

Synopsis:
  perm = split_permutation(key, channels)                 # drawn once, kept in state
  f_inh, f_exp = channel_split(f_s, perm, n_inh)          # random channel split
  l_inh = factor_distance(transform(F_inh, 'ft'), transform(F_t, 'ft'), 'l1')
  l_exp = exploration_distance(transform(F_exp, 'ft'), transform(F_t, 'ft'), 'l1')
  rec = reconstruction(f_t, ae(f_t), norm='l1')

Sources: seed 000 eqs. (2)-(4) and the official code
aliyun/Revisiting-Knowledge-Distillation-an-Inheritance-and-Exploration-Framework
(`loss/factor_transfer.py`, `loss/reconstruction.py`, `processors/IE_KD.py`).
Every distance first flattens each sample and L2-normalises it
(`F.normalize(x.view(N, -1))`), then reduces with a *mean* over N*D, as the
official `_factor_transfer`.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from kdjax.losses.features import attention_map, l2_normalize, match_spatial

Array = jax.Array

METRICS = ('l1', 'l2', 'cos', 'partial_l2', 'cka')
VARIANTS = ('ft', 'at', 'od')


def split_permutation(key: Array, channels: int) -> Array:
  """A random permutation of `channels` channel indices (int32 [C]).

  The official code draws `torch.randperm(C)` at the first batch and keeps it
  for the whole run; kdjax draws it from the term's init key (a pure function
  of the run's seed) and stores it in the term's state.
  """
  return jax.random.permutation(key, channels).astype(jnp.int32)


def num_inherit(channels: int, ratio: float) -> int:
  """Number of inheritance channels for an inheritance ratio eta in [0, 1]."""
  if not 0.0 <= ratio <= 1.0:
    raise ValueError(f'inherit_ratio must be in [0, 1], got {ratio!r}.')
  return int(round(channels * ratio))


def channel_split(f: Array, perm: Array, n_inh: int) -> tuple[Array, Array]:
  """(f[..., perm[:n_inh]], f[..., perm[n_inh:]]) for an NHWC map f."""
  chex.assert_rank(perm, 1)
  chex.assert_axis_dimension(f, -1, perm.shape[0])
  return jnp.take(f, perm[:n_inh], axis=-1), jnp.take(f, perm[n_inh:], axis=-1)


def transform(factor: Array, variant: str) -> Array:
  """The per-variant view of a factor before the distance.

  'ft': the factor itself (IE-FT); 'at': its AT attention map mean_c |F|^2,
  L2-normalised over H*W (IE-AT, seed 000 Sec. 4.1); 'od': relu(F) (IE-OD).
  """
  if variant == 'ft':
    return factor
  if variant == 'at':
    return attention_map(factor, p=2)
  if variant == 'od':
    return jax.nn.relu(factor)
  raise ValueError(f'unknown IE-KD variant {variant!r}; known: {VARIANTS}.')


def _flat_normalised(a: Array, b: Array) -> tuple[Array, Array]:
  chex.assert_equal_shape([a, b])
  a = l2_normalize(a.reshape(a.shape[0], -1).astype(jnp.float32))
  b = l2_normalize(b.reshape(b.shape[0], -1).astype(jnp.float32))
  return a, b


def linear_cka(a: Array, b: Array, eps: float = 1e-12) -> Array:
  """Linear CKA (Kornblith et al. 2019) between two batches of representations.

  With column-centred X [N, p], Y [N, q]:
  CKA = ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F), computed through the N x N
  Gram matrices (tr(K_X K_Y) = ||Y^T X||_F^2). 1 for identical inputs, invariant
  to isotropic scaling and orthogonal transforms of either side.
  """
  x = a.reshape(a.shape[0], -1).astype(jnp.float32)
  y = b.reshape(b.shape[0], -1).astype(jnp.float32)
  x = x - x.mean(0, keepdims=True)
  y = y - y.mean(0, keepdims=True)
  kx, ky = x @ x.T, y @ y.T
  return jnp.sum(kx * ky) / jnp.sqrt(jnp.maximum(jnp.sum(kx * kx) * jnp.sum(ky * ky), eps))


def factor_distance(a: Array, b: Array, metric: str = 'l1') -> Array:
  """Similarity loss D(a, b) between per-sample L2-normalised flattened factors.

  l1:         mean |a^ - b^|                       (official NormLoss p=1, paper eq. 2)
  l2:         sqrt(mean (a^ - b^)^2)               (official NormLoss p=2)
  cos:        mean_n (1 - <a^_n, b^_n>)            (official CosLoss)
  partial_l2: mean (a^ - b^)^2 [a^ > b^ or b^ > 0] (OD's partial L2, b = target)
  cka:        1 - linear_cka(a, b)                  (seed 000 Table 6a's "CKA"; batch-level)

  Args:
    a: student-side factor [N, ...].
    b: target factor of the same shape (not stopped here; callers decide).
    metric: one of METRICS.

  Returns:
    A scalar.
  """
  if metric == 'cka':
    chex.assert_equal_shape([a, b])
    return 1.0 - linear_cka(a, b)
  a, b = _flat_normalised(a, b)
  d = a - b
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


def exploration_distance(a: Array, b: Array, metric: str = 'l1') -> Array:
  """Dis-similarity loss: -D(a, b) for l1/l2/partial_l2, mean_n |cos(a_n, b_n)| for cos,
  linear CKA for cka.

  The cos form is the official CosLoss(negative=True) (orthogonality, seed 000
  Sec. 3.2); the others are the paper's negative distances (eq. 3).
  """
  if metric == 'cos':
    a, b = _flat_normalised(a, b)
    return jnp.mean(jnp.abs(jnp.sum(a * b, axis=-1)))
  if metric == 'cka':  # Table 6a "L1 + CKA": explore by lowering the CKA similarity
    return linear_cka(a, b)
  return -factor_distance(a, b, metric)


def inheritance_exploration(f_inh: Array | None, f_exp: Array | None, f_t: Array, *,
                            variant: str = 'ft', metric: str = 'l1',
                            exp_metric: str | None = None) -> tuple[Array, Array]:
  """(L_inh, L_exp) for IE-FT / IE-AT / IE-OD factors (seed 000 eqs. 2-3).

  Args:
    f_inh: inheritance factor [N, H, W, C'] or None (ratio 0: no inheritance part).
    f_exp: exploration factor of the same shape, or None (ratio 1).
    f_t: teacher factor; no gradient flows into it. Spatial sizes are matched
      by pooling the larger map (RD convention).
    variant: 'ft', 'at' or 'od' (see `transform`).
    metric: inheritance metric; `exp_metric` (default: the same) for exploration.

  Returns:
    Two scalars; a missing part gives 0.
  """
  exp_metric = metric if exp_metric is None else exp_metric
  f_t = jax.lax.stop_gradient(f_t)
  zero = jnp.zeros((), jnp.float32)
  l_inh, l_exp = zero, zero
  if f_inh is not None:
    s, t = match_spatial(f_inh, f_t)
    l_inh = factor_distance(transform(s, variant), transform(t, variant), metric)
  if f_exp is not None:
    s, t = match_spatial(f_exp, f_t)
    l_exp = exploration_distance(transform(s, variant), transform(t, variant), exp_metric)
  return l_inh, l_exp


def reconstruction(x: Array, y: Array, norm: str = 'l1') -> Array:
  """Auto-encoder reconstruction loss.

  'l1' = mean |x - y| (official RecLoss, default); 'l2' = mean (x - y)^2 (the
  paper's ||f - R(f)||^2, mean-reduced so the scale does not depend on the
  feature size).
  """
  chex.assert_equal_shape([x, y])
  d = (x - y).astype(jnp.float32)
  if norm == 'l1':
    return jnp.mean(jnp.abs(d))
  if norm == 'l2':
    return jnp.mean(d * d)
  raise ValueError(f"unknown reconstruction norm {norm!r}; known: 'l1', 'l2'.")
