"""Neuron selectivity transfer (Huang & Wang 2017, Like What You Like; RD `NSTLoss`).

Formula (polynomial kernel k(a, b) = (a^T b)^2 over channel pairs, channels
L2-normalised over HW):
  L = sum over layers of mean(K_tt) + mean(K_ss) - 2 mean(K_st),  weight 50

  dict(method='nst', weight=50.0)
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


def _poly_kernel(a: Array, b: Array) -> Array:
  """(a_i . b_j)^2 over channel pairs: a [N, Ca, HW], b [N, Cb, HW] -> [N, Cb, Ca]."""
  return jnp.square(jnp.einsum('nid,njd->nji', a, b))


def nst(student_feats: Sequence[Array], teacher_feats: Sequence[Array]) -> Array:
  """Neuron selectivity transfer with the d=2 polynomial kernel (RD `NSTLoss`).

  Each channel is L2-normalised over HW; with k(a, b) = (a^T b)^2 over channel
  pairs, per layer loss = mean(K_tt) + mean(K_ss) - 2 mean(K_st) (each a mean
  over N x C x C'), the teacher term detached; summed over layers. Channel
  counts may differ; spatial sizes are matched by pooling.

  Args:
    student_feats: sequence of [N, H, W, C_s] maps.
    teacher_feats: sequence of [N, H', W', C_t] maps.

  Returns:
    A scalar.
  """
  return _nst(student_feats, teacher_feats, jnp.mean)


def nst_per_sample(student_feats: Sequence[Array], teacher_feats: Sequence[Array]) -> Array:
  """`nst` per sample [N] (each kernel mean over C x C' only); its batch mean is `nst`."""
  return _nst(student_feats, teacher_feats, lambda k: jnp.mean(k, axis=(1, 2)))


def _nst(student_feats: Sequence[Array], teacher_feats: Sequence[Array], reduce) -> Array:
  """The NST terms of each layer, reduced by `reduce` ([N, C, C'] -> scalar or [N])."""
  losses.check_sequences(student_feats, teacher_feats, 'nst')
  total = 0.0
  for s, t in zip(student_feats, teacher_feats):
    s, t = losses.match_spatial(losses.f32(s), jax.lax.stop_gradient(losses.f32(t)))
    n = s.shape[0]
    # NHWC -> [N, C, HW], normalised over HW per channel.
    fs = losses.l2_normalize(s.reshape(n, -1, s.shape[-1]).transpose(0, 2, 1))
    ft = losses.l2_normalize(t.reshape(n, -1, t.shape[-1]).transpose(0, 2, 1))
    total += (reduce(_poly_kernel(ft, ft)) + reduce(_poly_kernel(fs, fs))
              - 2.0 * reduce(_poly_kernel(fs, ft)))
  return total


@register_method('nst', family='features', paper='Huang & Wang 2017, Like What You Like: '
                 'Knowledge Distill via Neuron Selectivity Transfer')
def build_nst(info: BuildInfo, *, weight: float = 50.0, student_features: FeatureArg = None,
              teacher_features: FeatureArg = None) -> Term:
  """Neuron selectivity transfer (polynomial kernel) on the stage outputs, weight 50."""
  s_keys, t_keys = resolve_feature_pair(info, 'nst', student_features, teacher_features,
                         lambda: info.stages('student'), lambda: info.stages('teacher'))
  checks.check_maps(info, 'nst', s_keys, t_keys)

  def loss(ctx: Context):
    return nst(pick(ctx.student, s_keys), pick(ctx.teacher, t_keys))

  def per_sample(ctx: Context):
    return nst_per_sample(pick(ctx.student, s_keys), pick(ctx.teacher, t_keys))
  return Term(name='nst', method='nst', weight=float(weight), loss=no_aux(loss),
              per_sample=no_aux(per_sample))
