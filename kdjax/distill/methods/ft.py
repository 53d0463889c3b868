"""Factor transfer (Kim et al. 2018, NeurIPS): paraphraser init stage + translator.

Synopsis:
  stage 1: dict(method='ft', phase='paraphraser', variant=V)   trains aux/ft/paraphraser only
  stage 2: dict(method='ft', variant=V)                         student + aux/ft/translator

Both phases build the same term name 'ft' with the same variables
{'paraphraser', 'translator'}, so the paraphraser trained in stage 1 is the
(frozen) one used in stage 2 (restrict `stage.trainable` as the `rd_cifar100` configs
does: stage 1 '^aux/ft/paraphraser/', stage 2 '^student/', '^aux/ft/translator/').

Variants (docs/methods.md FT):
  'official' (default; Jangho-Kim/Factor-Transfer-pytorch): no BN anywhere; factor
     loss = L1-mean of per-sample L2-normalised flattened factors; reconstruction
     L1; weight 500.
  'rd' (RepDistiller): translator with BN; factor = AT-like map
     normalize(mean_c F^2) compared by mean |d|; reconstruction MSE; weight 200.
Paraphraser input: the teacher's last stage output (RD feat[-2]); the
translator reads the student's. Rate k = 0.5.
"""

from __future__ import annotations

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from kdjax import losses
from kdjax.distill import checks
from kdjax.distill import modules
from kdjax.distill.api import BuildInfo, Context, Needs, Term, register_method, resolve_feature_pair
from kdjax.models.common import batch_norm

Array = jax.Array


def _reduce(per_sample: bool):
  """jnp.mean, or each sample's mean [N] (whose batch mean is the loss)."""
  return losses.row_mean if per_sample else jnp.mean


def ft_factor_rd(factor_s: Array, factor_t: Array, p1: float = 2.0, p2: float = 1.0,
                 per_sample: bool = False) -> Array:
  """RD `FactorTransfer`: AT-style maps normalize(mean_c F^p1) compared by mean |d|^p2.

  The larger map is pooled to the smaller one first. `per_sample`: [N].
  """
  s, t = losses.match_spatial(losses.f32(factor_s), jax.lax.stop_gradient(losses.f32(factor_t)))
  d = losses.attention_map(s, p1) - losses.attention_map(t, p1)
  mean = _reduce(per_sample)
  return mean(jnp.abs(d)) if p2 == 1 else mean(d ** p2)


def ft_factor_official(factor_s: Array, factor_t: Array, per_sample: bool = False) -> Array:
  """Official FT: L1-mean of normalize(flatten(T(F_s))) - normalize(flatten(P_enc(F_t)))."""
  s, t = losses.match_spatial(losses.f32(factor_s), jax.lax.stop_gradient(losses.f32(factor_t)))
  chex.assert_equal_shape([s, t])
  n = s.shape[0]
  d = losses.l2_normalize(s.reshape(n, -1)) - losses.l2_normalize(t.reshape(n, -1))
  return _reduce(per_sample)(jnp.abs(d))


def ft_reconstruction(rec: Array, target: Array, kind: str = 'mse',
                      per_sample: bool = False) -> Array:
  """Paraphraser reconstruction: 'mse' (RD nn.MSELoss) or 'l1' (official code)."""
  d = losses.f32(rec) - jax.lax.stop_gradient(losses.f32(target))
  mean = _reduce(per_sample)
  return mean(jnp.square(d)) if kind == 'mse' else mean(jnp.abs(d))


def _leaky(x):
  return nn.leaky_relu(x, 0.1)


class Paraphraser(nn.Module):
  """Factor Transfer paraphraser (Kim et al. 2018; RD `Paraphraser`, official FT code).

  Encoder: conv3x3 C->C, C->kC, kC->kC (bias, LeakyReLU 0.1); decoder:
  ConvTranspose3x3 kC->kC, kC->C, C->C (LeakyReLU after each, also the last).
  `use_bn` inserts BN after every conv (RD's option; off in RD and official).
  `__call__` returns (factor, reconstruction); `encode` returns the factor.
  """
  channels: int
  rate: float = 0.5
  use_bn: bool = False

  def setup(self):
    c, kc = self.channels, int(self.channels * self.rate)
    self.enc = [modules.conv(o, 3, 9 * i, pad=1, name=f'enc{j}')
                for j, (i, o) in enumerate(((c, c), (c, kc), (kc, kc)))]
    self.dec = [nn.ConvTranspose(o, (3, 3), padding=((1, 1), (1, 1)),
                                 kernel_init=modules.torch_transpose_kernel_init,
                                 bias_init=modules.torch_bias_init(9 * o), name=f'dec{j}')
                for j, (i, o) in enumerate(((kc, kc), (kc, c), (c, c)))]
    if self.use_bn:
      self.enc_bn = [nn.BatchNorm(momentum=0.9, epsilon=1e-5, name=f'enc_bn{j}') for j in range(3)]
      self.dec_bn = [nn.BatchNorm(momentum=0.9, epsilon=1e-5, name=f'dec_bn{j}') for j in range(3)]

  def _run(self, x, layers, bns, train):
    for j, layer in enumerate(layers):
      x = layer(x)
      if self.use_bn:
        x = bns[j](x, use_running_average=not train)
      x = _leaky(x)
    return x

  def encode(self, x, train: bool = False):
    return self._run(x, self.enc, getattr(self, 'enc_bn', None), train)

  def __call__(self, x, train: bool = False):
    factor = self.encode(x, train)
    return factor, self._run(factor, self.dec, getattr(self, 'dec_bn', None), train)


class Translator(nn.Module):
  """Factor Transfer translator on the student (RD `Translator`; official FT code).

  conv3x3 C_s->C_s, C_s->out, out->out (bias, LeakyReLU 0.1), out = k C_t;
  with BN after each conv when `use_bn` (RD: True; official: False).
  """
  out_channels: int
  use_bn: bool = True

  @nn.compact
  def __call__(self, x, train: bool = False):
    c = x.shape[-1]
    for j, (i, o) in enumerate(((c, c), (c, self.out_channels),
                                (self.out_channels, self.out_channels))):
      x = modules.conv(o, 3, 9 * i, pad=1, name=f'conv{j}')(x)
      if self.use_bn:
        x = batch_norm(train, f'bn{j}')(x)
      x = _leaky(x)
    return x


_DEFAULT_WEIGHT = {('official', 'distill'): 500.0, ('rd', 'distill'): 200.0,
                   ('official', 'paraphraser'): 1.0, ('rd', 'paraphraser'): 1.0}


@register_method('ft', family='features', paper='Kim et al. 2018, Paraphrasing Complex Network: '
                 'Network Compression via Factor Transfer')
def build_ft(info: BuildInfo, *, weight: float | None = None, phase: str = 'distill',
             variant: str = 'official', rate: float = 0.5, reconstruction: str | None = None,
             student_feature: str | None = None, teacher_feature: str | None = None) -> Term:
  """Factor transfer: phase 'paraphraser' (init stage) or 'distill'; variant 'official' | 'rd'."""
  if phase not in ('distill', 'paraphraser'):
    raise ValueError(f"ft: phase must be 'distill' or 'paraphraser', got {phase!r}.")
  if variant not in ('official', 'rd'):
    raise ValueError(f"ft: variant must be 'official' or 'rd', got {variant!r}.")
  if reconstruction is None:
    reconstruction = 'l1' if variant == 'official' else 'mse'
  if reconstruction not in ('l1', 'mse'):
    raise ValueError(f"ft: reconstruction must be 'l1' or 'mse', got {reconstruction!r}.")
  checks.positive('ft', rate=rate)
  (ks,), (kt,) = resolve_feature_pair(info, 'ft', student_feature, teacher_feature,
                                 lambda: info.stages('student')[-1:],
                                 lambda: info.stages('teacher')[-1:])
  checks.require_maps(info, 'ft', [ks], [kt])
  s, t = checks.shape(info, 'student', ks), checks.shape(info, 'teacher', kt)
  checks.require_poolable('ft', ks, kt, s, t)
  factor_ch = int(t[-1] * rate)
  if factor_ch < 1:
    raise ValueError(f'ft: rate {rate} leaves no factor channels for {t[-1]} teacher channels.')
  para = Paraphraser(t[-1], rate, use_bn=False)
  trans = Translator(factor_ch, use_bn=(variant == 'rd'))
  w = _DEFAULT_WEIGHT[(variant, phase)] if weight is None else float(weight)

  def init(rng, ctx: Context):
    return modules.init_modules(rng, {'paraphraser': (para, ctx.teacher[kt]),
                                 'translator': (trans, ctx.student[ks])})

  def loss(aux, ctx: Context, per_sample: bool = False):
    stats = {}
    f_t = ctx.teacher[kt]
    if phase == 'paraphraser':
      _, rec = modules.apply_module(para, aux, 'paraphraser', f_t, ctx.train, stats)
      value = ft_reconstruction(rec, f_t, reconstruction, per_sample)
    else:
      factor_t = modules.apply_module(para, aux, 'paraphraser', f_t, ctx.train, stats,
                                 method='encode')
      factor_s = modules.apply_module(trans, aux, 'translator', ctx.student[ks], ctx.train, stats)
      if variant == 'rd':
        value = ft_factor_rd(factor_s, factor_t, per_sample=per_sample)
      else:
        value = ft_factor_official(factor_s, factor_t, per_sample)
    return value, {}, modules.state_out(aux, stats)
  # The paraphraser stage trains only the paraphraser on frozen features: student in eval mode.
  # The paraphraser never uses BN here (use_bn=False); the translator's BN is masked by the step.
  return Term(name='ft', method='ft', weight=w, loss=loss, init=init,
              per_sample=lambda aux, ctx: loss(aux, ctx, per_sample=True),
              needs=Needs(student_eval=(phase == 'paraphraser')))
