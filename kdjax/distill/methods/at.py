"""Attention transfer (Zagoruyko & Komodakis 2017, Paying More Attention to Attention;
RD `Attention`).

Formula:
  Q(F) = normalize(flatten(mean_c |F|^p)) per sample (`kdjax.losses.attention_map`)
  L = sum over layers of mean_{N, HW} (Q_s - Q_t)^2,  p 2, weight 1000
on the stage outputs (RD feat[1:-1]); the larger map is pooled to the smaller.

  dict(method='at', weight=1000.0, student_features=['stage2', 'stage3'])
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from kdjax import losses
from kdjax.distill import checks
from kdjax.distill.api import (BuildInfo, Context, FeatureArg, Term,
                               no_aux, pick, register_method, resolve_feature_pair)

Array = jax.Array


def attention(student_feats: Sequence[Array], teacher_feats: Sequence[Array], *,
              p: float = 2) -> Array:
  """Attention transfer (Zagoruyko & Komodakis 2017; RD `Attention`).

  Q(F) = normalize(flatten(mean_c |F|^p)) per sample;
  loss = sum over layers of mean_{N, HW} (Q_s - Q_t)^2.
  RD takes F^p (equal to |F|^p for p=2); channel sum vs mean cancels in the
  normalisation. Channel counts may differ.

  Args:
    student_feats: sequence of [N, H, W, C_s] maps.
    teacher_feats: sequence of [N, H', W', C_t] maps; larger maps are pooled.
    p: the exponent.

  Returns:
    A scalar.
  """
  losses.check_sequences(student_feats, teacher_feats, 'attention')
  total = jnp.zeros((), jnp.float32)
  for s, t in zip(student_feats, teacher_feats):
    s, t = losses.match_spatial(s, jax.lax.stop_gradient(t))
    total += jnp.mean(jnp.square(losses.attention_map(s, p) - losses.attention_map(t, p)))
  return total


def attention_per_sample(student_feats: Sequence[Array], teacher_feats: Sequence[Array], *,
                         p: float = 2) -> Array:
  """`attention` per sample [N]: sum over layers of mean_HW (Q_s - Q_t)^2; its mean is the loss."""
  losses.check_sequences(student_feats, teacher_feats, 'attention')
  total = jnp.zeros((student_feats[0].shape[0],), jnp.float32)
  for s, t in zip(student_feats, teacher_feats):
    s, t = losses.match_spatial(s, jax.lax.stop_gradient(t))
    total += losses.row_mean(jnp.square(losses.attention_map(s, p) - losses.attention_map(t, p)))
  return total


@register_method('at', family='features', paper='Zagoruyko & Komodakis 2017, Paying More '
                 'Attention to Attention')
def build_at(info: BuildInfo, *, weight: float = 1000.0, student_features: FeatureArg = None,
             teacher_features: FeatureArg = None, p: float = 2.0) -> Term:
  """Attention transfer on the stage outputs (RD feat[1:-1]), weight 1000."""
  s_keys, t_keys = resolve_feature_pair(info, 'at', student_features, teacher_features,
                         lambda: info.stages('student'), lambda: info.stages('teacher'))
  checks.check_maps(info, 'at', s_keys, t_keys)
  checks.positive('at', p=p)

  def loss(ctx: Context):
    return attention(pick(ctx.student, s_keys), pick(ctx.teacher, t_keys), p=p)

  def per_sample(ctx: Context):
    return attention_per_sample(pick(ctx.student, s_keys), pick(ctx.teacher, t_keys), p=p)
  return Term(name='at', method='at', weight=float(weight), loss=no_aux(loss),
              per_sample=no_aux(per_sample))
