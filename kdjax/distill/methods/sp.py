"""Similarity-preserving KD (Tung & Mori 2019; RD `Similarity`).

Formula: f = flatten(F) [N, CHW]; G = row-normalize(f f^T);
  L = sum over layers of ||G_t - G_s||_F^2 / N^2,   last stage (RD feat[-2]), weight 3000

  dict(method='sp', weight=3000.0)
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from kdjax import losses
from kdjax.distill import checks
from kdjax.distill.api import (BuildInfo, Context, FeatureArg, Term,
                               no_aux, pick, register_method, resolve_feature_pair)

Array = jax.Array


def similarity_preserving(student_feats: Sequence[Array],
                          teacher_feats: Sequence[Array], mask: Array | None = None) -> Array:
  """Similarity-preserving KD (Tung & Mori 2019; RD `Similarity`).

  f = flatten(F) [N, CHW]; G = f f^T, each row L2-normalised;
  loss = ||G_t - G_s||_F^2 / N^2, summed over the pairs of the sequences.

  With `mask` [N] the rows of the masked samples are zeroed before the Gram
  matrices and N is the number of valid rows: the loss of the valid rows alone.

  Args:
    student_feats: sequence of [N, ...] maps (RD: the last conv map).
    teacher_feats: sequence of [N, ...] maps, any widths.
    mask: optional 0/1 validity of the rows [N].

  Returns:
    A scalar.
  """
  if isinstance(student_feats, (jax.Array, np.ndarray)) or isinstance(
      teacher_feats, (jax.Array, np.ndarray)):
    raise TypeError('similarity_preserving takes sequences; wrap a single map in a list.')
  if len(student_feats) != len(teacher_feats) or not student_feats:
    raise ValueError(f'similarity_preserving: got {len(student_feats)} student and '
                     f'{len(teacher_feats)} teacher features; need the same non-zero number.')
  total = jnp.zeros((), jnp.float32)
  for s, t in zip(student_feats, teacher_feats):
    losses.check_embeddings(s, t)
    fs, ft = losses.flat(s), losses.flat(jax.lax.stop_gradient(t))
    n = fs.shape[0]
    if mask is not None:  # zero rows: zero Gram rows and columns, which normalise to 0
      m = jnp.asarray(mask, jnp.float32)[:, None]
      fs, ft, n = fs * m, ft * m, losses.valid_count(mask, n)
    g_s = losses.l2_normalize(fs @ fs.T)
    g_t = losses.l2_normalize(ft @ ft.T)
    total += jnp.sum(jnp.square(g_t - g_s)) / (n * n)
  return total


@register_method('sp', family='relational', paper='Tung & Mori 2019, Similarity-Preserving '
                 'Knowledge Distillation')
def build_sp(info: BuildInfo, *, weight: float = 3000.0, student_features: FeatureArg = None,
             teacher_features: FeatureArg = None) -> Term:
  """Similarity-preserving KD on the last stage output (RD feat[-2]), weight 3000."""
  s_keys, t_keys = resolve_feature_pair(info, 'sp', student_features, teacher_features,
                         checks.last_stage(info, 'student'), checks.last_stage(info, 'teacher'))
  checks.check_batched(info, 'sp', s_keys, t_keys)

  def loss(ctx: Context):
    return similarity_preserving(pick(ctx.student, s_keys), pick(ctx.teacher, t_keys), ctx.mask)
  return Term(name='sp', method='sp', weight=float(weight), loss=no_aux(loss), masked=True)
