"""Activation-boundary distillation (Heo et al. 2019, AAAI; RD `ABLoss` + `Connector`).

Synopsis:
  dict(method='ab', weight=1.0)       pre-ReLU stage maps (RD feat[1:-1], preact=True)

Per layer the student map goes through a connector (identity when channels and
spatial size match the teacher's, else ConvReg without ReLU: conv + BN) and
  L = sum_i 2^(i-L+1) sum[(s+m)^2 1(s>-m, t<=0) + (s-m)^2 1(s<=m, t>0)] / N * 3/1000,
margin m = 1. RD trains it only in a 30-epoch init stage (student feature layers
+ connector, CE off) and then trains with CE alone (the `rd_cifar100` configs).
"""

from __future__ import annotations

from typing import Sequence

import chex
import jax
import jax.numpy as jnp

from kdjax import losses
from kdjax.distill import checks
from kdjax.distill import modules
from kdjax.distill.api import BuildInfo, Context, Term, register_method, resolve_feature_pair

Array = jax.Array


def ab_layer(source: Array, target: Array, margin: float = 1.0) -> Array:
  """RD `ABLoss.criterion_alternative_l2`, sum reduction.

  sum[(s + m)^2 1(s > -m and t <= 0) + (s - m)^2 1(s <= m and t > 0)].
  Zero when every s <= -m where t <= 0 and every s > m where t > 0.
  """
  chex.assert_equal_shape([source, target])
  s, t = losses.f32(source), jax.lax.stop_gradient(losses.f32(target))
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


def ab_loss_per_sample(sources: Sequence[Array], targets: Sequence[Array],
                       margin: float = 1.0) -> Array:
  """`ab_loss` per sample [N] (each sample's weighted sum * 3 / 1000); its mean is `ab_loss`."""
  total = 0.0
  for w, s, t in zip(ab_weights(len(sources)), sources, targets):
    chex.assert_equal_shape([s, t])
    s, t = losses.f32(s), jax.lax.stop_gradient(losses.f32(t))
    per = (jnp.square(s + margin) * ((s > -margin) & (t <= 0))
           + jnp.square(s - margin) * ((s <= margin) & (t > 0)))
    total = total + w * jnp.sum(per.reshape(per.shape[0], -1), axis=1)
  return total / 1000.0 * 3.0


@register_method('ab', family='features', paper='Heo et al. 2019, Knowledge Transfer via '
                 'Distillation of Activation Boundaries Formed by Hidden Neurons')
def build_ab(info: BuildInfo, *, weight: float = 1.0, margin: float = 1.0,
             student_features=None, teacher_features=None) -> Term:
  """Activation-boundary loss on pre-ReLU stage maps with RD's connector (init-stage method)."""
  s_keys, t_keys = resolve_feature_pair(info, 'ab', student_features, teacher_features,
                                   lambda: info.stages('student', preact=True),
                                   lambda: info.stages('teacher', preact=True))
  checks.require_maps(info, 'ab', s_keys, t_keys)
  checks.positive('ab', margin=margin)
  conns = {}
  for i, (ks, kt) in enumerate(zip(s_keys, t_keys)):
    s, t = checks.shape(info, 'student', ks), checks.shape(info, 'teacher', kt)
    if s[-1] == t[-1] and s[1:3] == t[1:3]:
      continue  # identity connector
    try:
      modules.conv_reg_kind(s[1:3], t[1:3])
    except ValueError as e:
      raise ValueError(f'ab: connector for student {ks!r} {s[1:]} -> teacher {kt!r} {t[1:]}: '
                       f'{e}') from None
    conns[f'connector{i}'] = (i, modules.ConvReg(t[-1], tuple(s[1:3]), tuple(t[1:3]),
                                                 use_relu=False))

  def init(rng, ctx: Context):
    return modules.init_modules(rng, {n: (m, ctx.student[s_keys[i]]) for n, (i, m) in conns.items()})

  def run(aux, ctx: Context, fn):
    stats, outs = {}, []
    for i, ks in enumerate(s_keys):
      x = ctx.student[ks]
      name = f'connector{i}'
      if name in conns:
        x = modules.apply_module(conns[name][1], aux, name, x, ctx.train, stats)
      outs.append(x)
    value = fn(outs, [ctx.teacher[k] for k in t_keys], margin)
    return value, {}, modules.state_out(aux, stats)
  return Term(name='ab', method='ab', weight=float(weight),
              loss=lambda aux, ctx: run(aux, ctx, ab_loss),
              per_sample=lambda aux, ctx: run(aux, ctx, ab_loss_per_sample),
              init=init if conns else None)
