"""Flow of solution procedure (Yim et al. 2017, A Gift from Knowledge Distillation; RD `FSP`).

Formula: for consecutive maps (bottom, top), pooled to the smaller size,
  G_ij = (1/HW) sum_hw top_i,hw bottom_j,hw   ([N, C_top, C_bottom])
  L = sum_pairs w_p * mean (G_s - G_t)^2,   on stem + stages (RD feat[:-1]), weight 1
Student and teacher channel counts must match map by map.

  dict(method='fsp', pair_weights=[1.0, 3.0, 1.0])
"""

from __future__ import annotations

from typing import Sequence

import chex
import jax
import jax.numpy as jnp

from kdjax import losses
from kdjax.distill import checks
from kdjax.distill.api import (BuildInfo, Context, FeatureArg, Term,
                               no_aux, pick, register_method, resolve_feature_pair)

Array = jax.Array


def fsp_matrices(feats: Sequence[Array]) -> list[Array]:
  """FSP matrices of consecutive maps (RD `FSP.compute_fsp`).

  For each pair (bottom, top) = (feats[i], feats[i+1]) the larger map is pooled
  to the smaller and G_{ij} = (1/HW) sum_hw top_{i,hw} bottom_{j,hw}, giving
  [N, C_top, C_bottom].
  """
  out = []
  for bot, top in zip(feats[:-1], feats[1:]):
    chex.assert_rank([bot, top], 4)
    bot, top = losses.match_spatial(losses.f32(bot), losses.f32(top))
    hw = bot.shape[1] * bot.shape[2]
    out.append(jnp.einsum('nhwi,nhwj->nij', top, bot) / hw)
  return out


def fsp(student_feats: Sequence[Array], teacher_feats: Sequence[Array], *,
        pair_weights: Sequence[float] | None = None, per_sample: bool = False) -> Array:
  """Flow-of-solution-procedure loss (Yim et al. 2017; RD `FSP`).

  FSP matrices between consecutive maps of each sequence (RD: feat[:-1], i.e.
  stem, stage1, ...), per pair mean over N x C1 x C2 of (G_s - G_t)^2, summed
  over pairs (optionally weighted: "KD beyond model compression" uses [1, 3, 1]). Student and
  teacher channel counts must match map by map.

  Args:
    student_feats: sequence of L >= 2 [N, H_i, W_i, C_i] maps.
    teacher_feats: sequence of L maps with the same channel counts.
    pair_weights: L-1 weights, or None for all ones.
    per_sample: return each sample's loss [N] (means over C1 x C2 only) instead.

  Returns:
    A scalar (or [N]).
  """
  losses.check_sequences(student_feats, teacher_feats, 'fsp')
  if len(student_feats) < 2:
    raise ValueError('fsp needs at least two maps per network.')
  for i, (s, t) in enumerate(zip(student_feats, teacher_feats)):
    if s.shape[-1] != t.shape[-1]:
      raise ValueError(f'fsp: map {i} has {s.shape[-1]} student channels but {t.shape[-1]} '
                       'teacher channels; FSP needs equal channel counts.')
  n_pairs = len(student_feats) - 1
  weights = [1.0] * n_pairs if pair_weights is None else list(pair_weights)
  if len(weights) != n_pairs:
    raise ValueError(f'fsp: {len(weights)} pair_weights for {n_pairs} pairs.')
  g_s = fsp_matrices(student_feats)
  g_t = fsp_matrices([jax.lax.stop_gradient(t) for t in teacher_feats])
  total = jnp.zeros((student_feats[0].shape[0],) if per_sample else (), jnp.float32)
  for w, s, t in zip(weights, g_s, g_t):
    total += w * (losses.row_mean(jnp.square(s - t)) if per_sample else jnp.mean(jnp.square(s - t)))
  return total


@register_method('fsp', family='features', paper='Yim et al. 2017, A Gift from Knowledge '
                 'Distillation (FSP)')
def build_fsp(info: BuildInfo, *, weight: float = 1.0, student_features: FeatureArg = None,
              teacher_features: FeatureArg = None,
              pair_weights: Sequence[float] | None = None) -> Term:
  """FSP matrices of consecutive maps (stem + stages, RD feat[:-1]), one-stage form.

  RD trains FSP as a 30-epoch init stage; here it is a plain term (weight 1)
  that a staged config can place in its init stage. Student and teacher must
  have equal channel counts map by map (RD reports wrn_40_2 -> wrn_40_1 N/A).
  """
  s_keys, t_keys = resolve_feature_pair(info, 'fsp', student_features, teacher_features,
                         lambda: ('stem',) + info.stages('student'),
                         lambda: ('stem',) + info.stages('teacher'))
  if len(s_keys) < 2:
    raise ValueError(f'fsp: needs at least two maps per network, got {list(s_keys)}.')
  checks.check_maps(info, 'fsp', s_keys, t_keys)
  for ks, kt in zip(s_keys, t_keys):
    cs, ct = info.feature('student', ks).shape[-1], info.feature('teacher', kt).shape[-1]
    if cs != ct:
      raise ValueError(
          f'fsp: student {info.arch("student") or ""} {ks!r} has {cs} channels but teacher '
          f'{info.arch("teacher") or ""} {kt!r} has {ct}; FSP compares C x C\' matrices, so '
          'the channel counts must match map by map (e.g. wrn_40_2 -> wrn_40_1 is not '
          'possible).')
  for seq, who in ((s_keys, 'student'), (t_keys, 'teacher')):
    for a, b in zip(seq[:-1], seq[1:]):
      _check_pair_spatial(info, who, a, b)
  if pair_weights is not None:
    pair_weights = tuple(float(w) for w in pair_weights)
    if len(pair_weights) != len(s_keys) - 1:
      raise ValueError(f'fsp: {len(pair_weights)} pair_weights for {len(s_keys) - 1} pairs '
                       f'of {list(s_keys)}.')

  def loss(ctx: Context):
    return fsp(pick(ctx.student, s_keys), pick(ctx.teacher, t_keys),
                      pair_weights=pair_weights)

  def per_sample(ctx: Context):
    return fsp(pick(ctx.student, s_keys), pick(ctx.teacher, t_keys), pair_weights=pair_weights,
               per_sample=True)
  return Term(name='fsp', method='fsp', weight=float(weight), loss=no_aux(loss),
              per_sample=no_aux(per_sample))


def _check_pair_spatial(info: BuildInfo, who: str, a: str, b: str):
  (ha, wa), (hb, wb) = info.feature(who, a).shape[1:3], info.feature(who, b).shape[1:3]
  if not ((ha >= hb and wa >= wb) or (ha <= hb and wa <= wb)):
    raise ValueError(f'fsp: {who} maps {a!r} ({ha}x{wa}) and {b!r} ({hb}x{wb}) cannot be '
                     'matched by pooling.')
