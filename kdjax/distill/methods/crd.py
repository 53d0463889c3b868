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

import jax
import jax.numpy as jnp
import numpy as np

from kdjax.distill import modules
from kdjax.distill.api import BuildInfo, Context, Term, register_method
from kdjax.distill.methods import aux_common as ac
from kdjax.losses import aux_losses


@register_method('crd', family='contrastive', paper='Tian et al. 2020, Contrastive '
                 'Representation Distillation')
def build_crd(info: BuildInfo, *, weight: float = 0.8, feat_dim: int = 128, nce_k: int = 16384,
              nce_t: float = 0.07, nce_m: float = 0.5, student_feature: str | None = None,
              teacher_feature: str | None = None) -> Term:
  """CRD: NCE between 128-d L2-normalised embeddings and memory banks of the other network."""
  (ks,), (kt,) = ac.feature_pair(info, 'crd', student_feature, teacher_feature, ('pooled',))
  if not (isinstance(feat_dim, int) and feat_dim > 0):
    raise ValueError(f'crd: feat_dim must be a positive int, got {feat_dim!r}.')
  if not (isinstance(nce_k, int) and nce_k > 0):
    raise ValueError(f'crd: nce_k must be a positive int, got {nce_k!r}.')
  ac.positive('crd', nce_t=nce_t)
  if not 0.0 <= nce_m < 1.0:
    raise ValueError(f'crd: nce_m must be in [0, 1), got {nce_m!r}.')
  labels = getattr(info, 'train_labels', None)
  n = int(info.num_train)
  if labels is not None:
    labels = np.asarray(labels).reshape(-1)
    if labels.shape[0] != n:
      raise ValueError(f'crd: {labels.shape[0]} train_labels for num_train={n}.')
    order, start, count = aux_losses.crd_class_table(labels, info.num_classes)
    k = min(nce_k, n - int(count.max()))
    if k < 1:
      raise ValueError('crd: the training set has a single class; no negatives exist.')
  else:
    k = min(nce_k, n - 1)
  embed = modules.Embed(feat_dim, normalize=True)
  bound = 1.0 / math.sqrt(feat_dim / 3.0)

  def init(rng, ctx: Context):
    aux = ac.init_modules(rng, {'embed_s': (embed, ctx.student[ks]),
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
    g_s = ac.apply_module(embed, aux, 'embed_s', ctx.student[ks], ctx.train, {})
    g_t = ac.apply_module(embed, aux, 'embed_t', ctx.teacher[kt], ctx.train, {})
    mem = aux['memory']
    index = ctx.index.astype(jnp.int32)
    new_mem = {}
    if labels is not None:
      neg = aux_losses.crd_sample_negatives(ctx.rng, ctx.labels, jnp.asarray(order),
                                            jnp.asarray(start), jnp.asarray(count), k)
      mask = neg_mask = None
    else:
      bank = mem['labels'].at[index].set(ctx.labels.astype(jnp.int32))
      neg, neg_mask = aux_losses.crd_sample_negatives_seen(ctx.rng, ctx.labels, bank, k)
      mask = jnp.concatenate([jnp.ones_like(neg_mask[:, :1]), neg_mask], axis=1)
      new_mem['labels'] = bank
    idx = jnp.concatenate([index[:, None], neg], axis=1)
    o_s = aux_losses.crd_scores(g_s, mem['memory_t'], idx, nce_t)
    o_t = aux_losses.crd_scores(g_t, mem['memory_s'], idx, nce_t)
    z_s = aux_losses.crd_normalizer(mem['z'][0], o_s, n, mask)
    z_t = aux_losses.crd_normalizer(mem['z'][1], o_t, n, mask)
    l_s = aux_losses.crd_nce(o_s / z_s, n, mask=neg_mask)
    l_t = aux_losses.crd_nce(o_t / z_t, n, mask=neg_mask)
    new_mem.update({
        'memory_s': aux_losses.crd_memory_update(mem['memory_s'], index, g_s, nce_m),
        'memory_t': aux_losses.crd_memory_update(mem['memory_t'], index, g_t, nce_m),
        'z': jnp.stack([z_s, z_t])})
    return l_s + l_t, {'loss_s': l_s, 'loss_t': l_t}, {'memory': new_mem}
  return Term(name='crd', method='crd', weight=float(weight), loss=loss, init=init)
