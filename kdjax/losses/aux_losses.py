"""Pure losses of the methods with trainable modules (FitNet, AB, FT, VID, OFD, CRD).

Synopsis:
  Maps are NHWC. The modules (connectors, regressors, embeddings) live in
  `kdjax.distill.modules`; these functions take their outputs. Teacher inputs
  are wrapped in `stop_gradient`. Reductions follow the reference code
  (METHODS.md section 2/3):

    hint_mse(s, t)                        FitNet: MSE mean over N*C*H*W (RD HintLoss)
    ab_layer(s, t, margin) / ab_loss      AB: alternative L2 on pre-ReLU maps (RD ABLoss)
    ofd_margin(gamma, beta)               OFD: E[x | x < 0] of N(beta, gamma^2) per channel
    ofd_partial_l2(s, t, margin)          OFD: partial L2, sum reduction
    ofd_loss(ss, ts, margins)             OFD: sum_i L_i / 2^(n-i-1) / N
    vid_nll(mu, var, t)                   VID: mean Gaussian NLL (RD VIDLoss)
    ft_factor_rd / ft_factor_official     FT factor losses; ft_reconstruction
    crd_*                                 CRD: class table, negatives, scores, NCE, memory update
"""

from __future__ import annotations

import math
from typing import Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np

from kdjax.losses.features import attention_map, l2_normalize, match_spatial

Array = jax.Array
_sg = jax.lax.stop_gradient


def _f32(x):
  return jnp.asarray(x).astype(jnp.float32)


# ----------------------------------------------------------------------------
# FitNet

def hint_mse(student: Array, teacher: Array) -> Array:
  """FitNet hint (RD `HintLoss` = nn.MSELoss): mean over every element of (s - t)^2."""
  chex.assert_equal_shape([student, teacher])
  return jnp.mean(jnp.square(_f32(student) - _sg(_f32(teacher))))


# ----------------------------------------------------------------------------
# AB

def ab_layer(source: Array, target: Array, margin: float = 1.0) -> Array:
  """RD `ABLoss.criterion_alternative_l2`, sum reduction.

  sum[(s + m)^2 1(s > -m and t <= 0) + (s - m)^2 1(s <= m and t > 0)].
  Zero when every s <= -m where t <= 0 and every s > m where t > 0.
  """
  chex.assert_equal_shape([source, target])
  s, t = _f32(source), _sg(_f32(target))
  loss = (jnp.square(s + margin) * ((s > -margin) & (t <= 0))
          + jnp.square(s - margin) * ((s <= margin) & (t > 0)))
  return jnp.sum(loss)


def ab_weights(num_layers: int) -> list[float]:
  """RD layer weights 2^(i - L + 1): the last layer gets 1."""
  return [2.0 ** (i - num_layers + 1) for i in range(num_layers)]


def ab_loss(sources: Sequence[Array], targets: Sequence[Array], margin: float = 1.0) -> Array:
  """RD `ABLoss` summed over layers: sum_i w_i ab_layer_i / N * 3 / 1000."""
  n = sources[0].shape[0]
  total = jnp.zeros((), jnp.float32)
  for w, s, t in zip(ab_weights(len(sources)), sources, targets):
    total += w * ab_layer(s, t, margin)
  return total / n / 1000.0 * 3.0


# ----------------------------------------------------------------------------
# OFD

def _phi(x):
  return jnp.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


def _cdf(x):
  return 0.5 * (1.0 + jax.scipy.special.erf(x / math.sqrt(2.0)))


def ofd_margin(gamma: Array, beta: Array) -> Array:
  """Per-channel OFD margin from the BN before the ReLU (official `get_margin_from_BN`).

  With s = |gamma|, m = beta: if Phi(-m/s) > 0.001, margin = m - s phi(m/s) / Phi(-m/s)
  (the mean of N(m, s^2) below 0), else -3 s. A channel with s = 0 gets margin
  min(m, 0) (its pre-ReLU value is the constant m).
  """
  s = jnp.abs(_f32(gamma))
  m = _f32(beta)
  safe_s = jnp.where(s > 0, s, 1.0)
  p = _cdf(-m / safe_s)
  safe_p = jnp.where(p > 0.001, p, 1.0)
  margin = jnp.where(p > 0.001, m - safe_s * _phi(m / safe_s) / safe_p, -3.0 * s)
  return jnp.where(s > 0, margin, jnp.minimum(m, 0.0))


def ofd_partial_l2(source: Array, target: Array, margin: Array) -> Array:
  """Official `distillation_loss`: t' = max(t, margin); sum (s - t')^2 1[(s > t') or (t' > 0)].

  `margin` broadcasts against the channel axis (shape [C]). Zero when s = t'
  wherever t' > 0 and s <= t' elsewhere.
  """
  s = _f32(source)
  t = jnp.maximum(_sg(_f32(target)), _f32(margin))
  mask = (s > t) | (t > 0)
  return jnp.sum(jnp.square(s - t) * mask)


def ofd_loss(sources: Sequence[Array], targets: Sequence[Array],
             margins: Sequence[Array]) -> Array:
  """OFD distillation summed over stages with weights 1/2^(n-i-1), divided by N.

  The official CIFAR code further divides by 1000 (the term weight 1e-3 here).
  Where the connected student map and the teacher map differ in size, the
  larger is adaptive-average-pooled to the smaller (teacher after the margin
  clamp), a kdjax extension for cross-architecture pairs.
  """
  n = sources[0].shape[0]
  num = len(sources)
  total = jnp.zeros((), jnp.float32)
  for i, (s, t, m) in enumerate(zip(sources, targets, margins)):
    t = jnp.maximum(_sg(_f32(t)), _f32(m))
    s, t = match_spatial(_f32(s), t)
    total += ofd_partial_l2(s, t, m) / 2.0 ** (num - i - 1)
  return total / n


# ----------------------------------------------------------------------------
# VID

def vid_nll(mean: Array, var: Array, target: Array) -> Array:
  """RD `VIDLoss`: mean over N*C*H*W of 0.5 [(mu - t)^2 / sigma^2 + log sigma^2]."""
  chex.assert_equal_shape([mean, target])
  var = _f32(var)
  return jnp.mean(0.5 * (jnp.square(_f32(mean) - _sg(_f32(target))) / var + jnp.log(var)))


# ----------------------------------------------------------------------------
# FT

def ft_factor_rd(factor_s: Array, factor_t: Array, p1: float = 2.0, p2: float = 1.0) -> Array:
  """RD `FactorTransfer`: AT-style maps normalize(mean_c F^p1) compared by mean |d|^p2.

  The larger map is pooled to the smaller one first.
  """
  s, t = match_spatial(_f32(factor_s), _sg(_f32(factor_t)))
  d = attention_map(s, p1) - attention_map(t, p1)
  return jnp.mean(jnp.abs(d)) if p2 == 1 else jnp.mean(d ** p2)


def ft_factor_official(factor_s: Array, factor_t: Array) -> Array:
  """Official FT: L1-mean of normalize(flatten(T(F_s))) - normalize(flatten(P_enc(F_t)))."""
  s, t = match_spatial(_f32(factor_s), _sg(_f32(factor_t)))
  chex.assert_equal_shape([s, t])
  n = s.shape[0]
  return jnp.mean(jnp.abs(l2_normalize(s.reshape(n, -1)) - l2_normalize(t.reshape(n, -1))))


def ft_reconstruction(rec: Array, target: Array, kind: str = 'mse') -> Array:
  """Paraphraser reconstruction: 'mse' (RD nn.MSELoss) or 'l1' (official code)."""
  d = _f32(rec) - _sg(_f32(target))
  return jnp.mean(jnp.square(d)) if kind == 'mse' else jnp.mean(jnp.abs(d))


# ----------------------------------------------------------------------------
# CRD

def crd_class_table(train_labels: np.ndarray, num_classes: int):
  """(sorted_idx [n], class_start [K], class_count [K]) of the training labels (numpy)."""
  labels = np.asarray(train_labels).astype(np.int64).reshape(-1)
  if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
    raise ValueError(f'train_labels must lie in [0, {num_classes}), got [{labels.min()}, '
                     f'{labels.max()}].')
  order = np.argsort(labels, kind='stable').astype(np.int32)
  count = np.bincount(labels, minlength=num_classes).astype(np.int32)
  start = (np.cumsum(count) - count).astype(np.int32)
  return order, start, count


def crd_max_negatives(train_labels: np.ndarray, num_classes: int) -> int:
  """The most distinct other-class samples every anchor has: n - max class count."""
  _, _, count = crd_class_table(train_labels, num_classes)
  return int(len(np.asarray(train_labels).reshape(-1)) - count.max())


def crd_sample_negatives(rng: Array, labels: Array, sorted_idx: Array, class_start: Array,
                         class_count: Array, k: int) -> Array:
  """[B, k] dataset indices drawn uniformly (with replacement) from OTHER classes.

  RD ('exact' mode) draws without replacement from the other-class indices
  (with replacement only when k exceeds them); with replacement is what a
  keyed, fixed-shape draw inside jit can do exactly: u ~ U{0..n - n_y - 1}
  indexes the class-sorted list with the anchor's class block skipped.
  """
  n = sorted_idx.shape[0]
  labels = labels.astype(jnp.int32)
  start = class_start[labels][:, None]
  cnt = class_count[labels][:, None]
  u = jax.random.randint(rng, (labels.shape[0], k), 0, (n - cnt).astype(jnp.int32))
  pos = u + jnp.where(u >= start, cnt, 0)
  return sorted_idx[pos]


def crd_scores(anchor: Array, memory: Array, idx: Array, temperature: float) -> Array:
  """exp(<memory[idx], anchor> / T): [B, K+1], the memory detached.

  Computed as a gather from anchor @ memory^T ([B, n]), equal to RD's
  bmm over the gathered rows but without materialising [B, K+1, D].
  """
  logits = _f32(anchor) @ _sg(_f32(memory)).T
  return jnp.exp(jnp.take_along_axis(logits, idx, axis=1) / temperature)


def crd_normalizer(z: Array, scores: Array, n_data: int, mask: Array | None = None) -> Array:
  """RD's Z: mean(scores) * n_data on the first call (z < 0), then frozen (no gradient).

  With `mask` [B, K+1] the mean is over the valid entries only.
  """
  if mask is None:
    mean = jnp.mean(scores)
  else:
    mean = jnp.sum(jnp.where(mask, scores, 0.0)) / jnp.maximum(jnp.sum(mask), 1)
  first = _sg(mean * n_data)
  return jnp.where(z < 0, first, z)


def crd_nce(x: Array, n_data: int, eps: float = 1e-7, mask: Array | None = None) -> Array:
  """RD `ContrastLoss`: NCE with noise P_n = 1/n_data over x [B, K+1] (column 0 positive).

  -(sum_b log(P_pos / (P_pos + K P_n + eps)) + sum_{b,k} log(K P_n / (P_neg + K P_n + eps))) / B.
  `mask` [B, K] (optional) drops negatives from the sum.
  """
  b, m = x.shape[0], x.shape[1] - 1
  mpn = m / float(n_data)
  p_pos, p_neg = x[:, 0], x[:, 1:]
  log_d1 = jnp.log(p_pos / (p_pos + mpn + eps))
  log_d0 = jnp.log(mpn / (p_neg + mpn + eps))
  if mask is not None:
    log_d0 = jnp.where(mask, log_d0, 0.0)
  return -(jnp.sum(log_d1) + jnp.sum(log_d0)) / b


def crd_sample_negatives_seen(rng: Array, labels: Array, label_bank: Array, k: int,
                              rounds: int = 8) -> tuple[Array, Array]:
  """Negatives when the training labels are not known up front (streamed datasets).

  `label_bank` [n] holds the label of every sample seen so far (-1: unseen).
  Each of `rounds` rounds draws uniform candidates over the dataset; a slot
  keeps its first candidate whose label is known and differs from the
  anchor's. Returns (indices [B, k], valid [B, k]); slots never filled are
  invalid (masked out of the loss), which only happens while few labels are
  known (the first epoch).
  """
  n = label_bank.shape[0]
  shape = (labels.shape[0], k)
  idx = jnp.zeros(shape, jnp.int32)
  valid = jnp.zeros(shape, bool)
  for r in range(rounds):
    cand = jax.random.randint(jax.random.fold_in(rng, r), shape, 0, n)
    lab = label_bank[cand]
    ok = (lab >= 0) & (lab != labels[:, None]) & ~valid
    idx = jnp.where(ok, cand, idx)
    valid = valid | ok
  return idx, valid


def crd_memory_update(memory: Array, idx: Array, value: Array, momentum: float = 0.5) -> Array:
  """memory[idx] <- normalize(momentum memory[idx] + (1 - momentum) value) (RD ContrastMemory)."""
  rows = momentum * memory[idx] + (1.0 - momentum) * _sg(_f32(value))
  rows = rows / jnp.sqrt(jnp.sum(rows * rows, axis=1, keepdims=True))
  return memory.at[idx].set(rows.astype(memory.dtype))
