"""Contrastive representation distillation (Tian et al. 2020; RD `CRDLoss` + `ContrastMemory`).

Synopsis:
  dict(method='crd', weight=0.8)       (+ dict(method='kd', weight=1.0) for CRD+KD)

Embeddings g_s, g_t = Linear(d -> 128) + L2 norm of the pooled vectors (both
trained, with weight decay, as RD's optimizer includes them). State (the
term's 'memory' collection, replaced every step):
  memory_s, memory_t  [num_train, 128], init U(-a, a), a = 1/sqrt(128/3)
  z                   [2] normalisers (student anchor, teacher anchor), -1 until set
Each step: K negatives per sample drawn uniformly (with replacement) from the
training samples of OTHER classes (`BuildInfo.train_labels`), keyed by ctx.rng;
index 0 of each row is the sample itself (ctx.index, RD 'exact' mode).
Without `train_labels` (streamed datasets) the state also holds a label bank
[num_train] (-1 = unseen) filled from (ctx.index, ctx.labels) as samples are
seen; negatives are then drawn among seen samples of other classes by
rejection (8 rounds) and slots left unfilled are masked out of the loss and of
Z (this only bites during the first epoch; K = min(nce_k, num_train - 1)).
  o_s = exp(<M_t[idx], g_s>/T), o_t = exp(<M_s[idx], g_t>/T), each / Z (Z = mean(o)
  num_train on the first step, then frozen); loss = NCE(o_s) + NCE(o_t);
  then M_s[index] <- normalize(m M_s[index] + (1-m) g_s) (same for t), m = 0.5.
K = min(nce_k, num_train - largest class) (the distinct other-class samples every
anchor has). Under data parallelism the step sees the global batch, so the
replicated banks stay identical on every device.
"""

from __future__ import annotations

import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from kdjax import losses
from kdjax.distill import checks
from kdjax.distill import modules
from kdjax.distill.api import BuildInfo, Context, Needs, Term, register_method, resolve_feature_pair

Array = jax.Array


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
  logits = losses.f32(anchor) @ jax.lax.stop_gradient(losses.f32(memory)).T
  return jnp.exp(jnp.take_along_axis(logits, idx, axis=1) / temperature)


def crd_normalizer(z: Array, scores: Array, n_data: int, mask: Array | None = None) -> Array:
  """RD's Z: mean(scores) * n_data on the first call (z < 0), then frozen (no gradient).

  With `mask` [B, K+1] the mean is over the valid entries only.
  """
  if mask is None:
    mean = jnp.mean(scores)
  else:
    mean = jnp.sum(jnp.where(mask, scores, 0.0)) / jnp.maximum(jnp.sum(mask), 1)
  first = jax.lax.stop_gradient(mean * n_data)
  return jnp.where(z < 0, first, z)


def crd_nce(x: Array, n_data: int, eps: float = 1e-7, mask: Array | None = None,
            rows: Array | None = None) -> Array:
  """RD `ContrastLoss`: NCE with noise P_n = 1/n_data over x [B, K+1] (column 0 positive).

  -(sum_b log(P_pos / (P_pos + K P_n + eps)) + sum_{b,k} log(K P_n / (P_neg + K P_n + eps))) / B.
  `mask` [B, K] (optional) drops negatives from the sum; `rows` [B] (optional, 0/1)
  keeps only the valid rows of a masked batch, B being their number.
  """
  b, m = x.shape[0], x.shape[1] - 1
  mpn = m / float(n_data)
  p_pos, p_neg = x[:, 0], x[:, 1:]
  log_d1 = jnp.log(p_pos / (p_pos + mpn + eps))
  log_d0 = jnp.log(mpn / (p_neg + mpn + eps))
  if mask is not None:
    log_d0 = jnp.where(mask, log_d0, 0.0)
  if rows is not None:
    r = jnp.asarray(rows, jnp.float32)
    return -(jnp.sum(log_d1 * r) + jnp.sum(log_d0 * r[:, None])) / jnp.maximum(jnp.sum(r), 1.0)
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


def crd_memory_update(memory: Array, idx: Array, value: Array, momentum: float = 0.5,
                      valid: Array | None = None) -> Array:
  """memory[idx] <- normalize(momentum memory[idx] + (1 - momentum) value) (RD ContrastMemory).

  `valid` [B] (optional): rows where it is 0 write nothing (the padding rows of a
  masked batch repeat indices of real rows, possibly of this very batch).
  """
  rows = momentum * memory[idx] + (1.0 - momentum) * jax.lax.stop_gradient(losses.f32(value))
  rows = rows / jnp.sqrt(jnp.sum(rows * rows, axis=1, keepdims=True))
  if valid is None:
    return memory.at[idx].set(rows.astype(memory.dtype))
  # An out-of-range index with mode='drop' is no write at all.
  idx = jnp.where(jnp.asarray(valid) > 0, idx, memory.shape[0])
  return memory.at[idx].set(rows.astype(memory.dtype), mode='drop')


@register_method('crd', family='contrastive', paper='Tian et al. 2020, Contrastive '
                 'Representation Distillation')
def build_crd(info: BuildInfo, *, weight: float = 0.8, feat_dim: int = 128, nce_k: int = 16384,
              nce_t: float = 0.07, nce_m: float = 0.5, student_feature: str | None = None,
              teacher_feature: str | None = None) -> Term:
  """CRD: NCE between 128-d L2-normalised embeddings and memory banks of the other network."""
  (ks,), (kt,) = resolve_feature_pair(info, 'crd', student_feature, teacher_feature, ('pooled',))
  if not (isinstance(feat_dim, int) and feat_dim > 0):
    raise ValueError(f'crd: feat_dim must be a positive int, got {feat_dim!r}.')
  if not (isinstance(nce_k, int) and nce_k > 0):
    raise ValueError(f'crd: nce_k must be a positive int, got {nce_k!r}.')
  checks.positive('crd', nce_t=nce_t)
  if not 0.0 <= nce_m < 1.0:
    raise ValueError(f'crd: nce_m must be in [0, 1), got {nce_m!r}.')
  labels = info.train_labels
  n = int(info.num_train)
  if labels is not None:
    labels = np.asarray(labels).reshape(-1)
    if labels.shape[0] != n:
      raise ValueError(f'crd: {labels.shape[0]} train_labels for num_train={n}.')
    order, start, count = crd_class_table(labels, info.num_classes)
    k = min(nce_k, n - int(count.max()))
    if k < 1:
      raise ValueError('crd: the training set has a single class; no negatives exist.')
  else:
    k = min(nce_k, n - 1)
  if k < nce_k:  # a clamp the user should know about (small or few-class training sets)
    warnings.warn(f'crd: nce_k={nce_k} exceeds the {k} negatives this training set has '
                  f'(samples outside the largest class); using nce_k={k}.', stacklevel=2)
  embed = modules.Embed(feat_dim, normalize=True)
  bound = 1.0 / math.sqrt(feat_dim / 3.0)

  def init(rng, ctx: Context):
    aux = modules.init_modules(rng, {'embed_s': (embed, ctx.student[ks]),
                                'embed_t': (embed, ctx.teacher[kt])})
    k1, k2 = jax.random.split(jax.random.fold_in(rng, 100))
    aux['memory'] = {
        'memory_s': jax.random.uniform(k1, (n, feat_dim), jnp.float32, -bound, bound),
        'memory_t': jax.random.uniform(k2, (n, feat_dim), jnp.float32, -bound, bound),
        'z': -jnp.ones((2,), jnp.float32)}
    if labels is None:
      aux['memory']['labels'] = -jnp.ones((n,), jnp.int32)
    return aux

  def loss(aux, ctx: Context):
    g_s = modules.apply_module(embed, aux, 'embed_s', ctx.student[ks], ctx.train, {})
    g_t = modules.apply_module(embed, aux, 'embed_t', ctx.teacher[kt], ctx.train, {})
    mem = aux['memory']
    index = ctx.index.astype(jnp.int32)
    rows = ctx.mask  # None, or the valid rows of a masked batch (no loss, no bank writes)
    new_mem = {}
    if labels is not None:
      neg = crd_sample_negatives(ctx.rng, ctx.labels, jnp.asarray(order),
                                            jnp.asarray(start), jnp.asarray(count), k)
      mask = neg_mask = None
    else:
      if rows is None:
        bank = mem['labels'].at[index].set(ctx.labels.astype(jnp.int32))
      else:
        bank = mem['labels'].at[jnp.where(rows > 0, index, n)].set(
            ctx.labels.astype(jnp.int32), mode='drop')
      neg, neg_mask = crd_sample_negatives_seen(ctx.rng, ctx.labels, bank, k)
      mask = jnp.concatenate([jnp.ones_like(neg_mask[:, :1]), neg_mask], axis=1)
      new_mem['labels'] = bank
    idx = jnp.concatenate([index[:, None], neg], axis=1)
    o_s = crd_scores(g_s, mem['memory_t'], idx, nce_t)
    o_t = crd_scores(g_t, mem['memory_s'], idx, nce_t)
    if rows is not None:  # Z's first-call mean over the valid rows' entries only
      valid = jnp.broadcast_to(rows[:, None] > 0, idx.shape)
      mask = valid if mask is None else mask & valid
    z_s = crd_normalizer(mem['z'][0], o_s, n, mask)
    z_t = crd_normalizer(mem['z'][1], o_t, n, mask)
    l_s = crd_nce(o_s / z_s, n, mask=neg_mask, rows=rows)
    l_t = crd_nce(o_t / z_t, n, mask=neg_mask, rows=rows)
    new_mem.update({
        'memory_s': crd_memory_update(mem['memory_s'], index, g_s, nce_m, rows),
        'memory_t': crd_memory_update(mem['memory_t'], index, g_t, nce_m, rows),
        'z': jnp.stack([z_s, z_t])})
    return l_s + l_t, {'loss_s': l_s, 'loss_t': l_t}, {'memory': new_mem}
  return Term(name='crd', method='crd', weight=float(weight), loss=loss, init=init,
              needs=Needs(index=True), masked=True)
