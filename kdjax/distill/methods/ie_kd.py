"""IE-KD (Huang et al. 2021) registrations: `ie_kd` (+ `ie_ft`, `ie_at`, `ie_od`).

Synopsis:
  Two-stage IE-KD (one term name, two phases; the aux variables carry over):

      stages = (
        dict(name='ae', epochs=30, trainable=('^aux/ie/ae/',),
             distill=dict(ce_weight=0.0, terms={'ie': dict(method='ie_kd', phase='ae')})),
        # (the 'ae' term runs the student in eval mode: its BN statistics stay put)
        dict(name='main', epochs=160,
             trainable=('^student/', '^aux/ie/(inh|exp)/'),
             distill=dict(ce_weight=1.0, terms={'ie': dict(method='ie_kd', variant='ft')})),
      )

  Stage 'ae' trains the factor auto-encoder on the frozen teacher's last map
  (L1 reconstruction, official; `rec_norm='l2'` for the paper's squared
  error). Stage 'main' splits the student's last map by a random channel
  permutation (drawn once from the run's seed at init, stored in the term's
  state `aux_state/ie/ie_split/perm`, so it is checkpointed and restored),
  encodes each part with its own Coder and adds
  inherit_weight * L_inh + explore_weight * L_exp against the teacher factor
  (the frozen encoder, BN in eval mode as the official code).

  IE-DML (`ie_dml`, the online cohort variant) is in `ie_dml.py`.

Defaults (the IE-KD paper + official code): variant 'ft', metric l1 (l2 for 'od'),
inherit_ratio 0.5, inherit_weight = explore_weight = 50, factor_ratio 2,
feature 'last_map' (CIFAR ResNet: layer3 after ReLU), term weight 1.

Losses (the distances are pure functions in kdjax/losses/factors.py, re-exported here):

Synopsis:
  perm = split_permutation(key, channels)                 # drawn once, kept in state
  f_inh, f_exp = channel_split(f_s, perm, n_inh)          # random channel split
  l_inh = factor_distance(transform(F_inh, 'ft'), transform(F_t, 'ft'), 'l1')
  l_exp = exploration_distance(transform(F_exp, 'ft'), transform(F_t, 'ft'), 'l1')
  rec = reconstruction(f_t, ae(f_t), norm='l1')

Sources: the IE-KD paper eqs. (2)-(4) and the official code
aliyun/Revisiting-Knowledge-Distillation-an-Inheritance-and-Exploration-Framework
(`loss/factor_transfer.py`, `loss/reconstruction.py`, `processors/IE_KD.py`).
Every distance first flattens each sample and L2-normalises it
(`F.normalize(x.view(N, -1))`), then reduces with a *mean* over N*D, as the
official `_factor_transfer`, i.e. the mean over samples of the per-sample mean
over D. On a masked batch (`data.drop_remainder=False`, `mask` 0/1 [N]) that
outer mean runs over the valid rows, and linear CKA centres and sums over them
only, so every loss and metric equals that of the valid rows alone (`Term.masked`).
"""

from __future__ import annotations


import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from kdjax import losses
from kdjax.distill import modules
from kdjax.distill.api import BuildInfo, Context, Needs, Term, register_method
# The factor distances (paper eqs. 2-4) live in kdjax/losses/factors.py; re-exported here.
from kdjax.losses.factors import (METRICS, exploration_distance, factor_distance,  # noqa: F401
                                  linear_cka, reconstruction)
from kdjax.models import common

Array = jax.Array


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
  L2-normalised over H*W (IE-AT, the IE-KD paper Sec. 4.1); 'od': relu(F) (IE-OD).
  """
  if variant == 'ft':
    return factor
  if variant == 'at':
    return losses.attention_map(factor, p=2)
  if variant == 'od':
    return jax.nn.relu(factor)
  raise ValueError(f'unknown IE-KD variant {variant!r}; known: {VARIANTS}.')


def inheritance_exploration(f_inh: Array | None, f_exp: Array | None, f_t: Array, *,
                            variant: str = 'ft', metric: str = 'l1',
                            exp_metric: str | None = None,
                            mask: Array | None = None) -> tuple[Array, Array]:
  """(L_inh, L_exp) for IE-FT / IE-AT / IE-OD factors (the IE-KD paper eqs. 2-3).

  Args:
    f_inh: inheritance factor [N, H, W, C'] or None (ratio 0: no inheritance part).
    f_exp: exploration factor of the same shape, or None (ratio 1).
    f_t: teacher factor; no gradient flows into it. Spatial sizes are matched
      by pooling the larger map (RD convention).
    variant: 'ft', 'at' or 'od' (see `transform`).
    metric: inheritance metric; `exp_metric` (default: the same) for exploration.
    mask: optional 0/1 [N]: average over the rows with mask 1 only.

  Returns:
    Two scalars; a missing part gives 0.
  """
  exp_metric = metric if exp_metric is None else exp_metric
  f_t = jax.lax.stop_gradient(f_t)
  zero = jnp.zeros((), jnp.float32)
  l_inh, l_exp = zero, zero
  if f_inh is not None:
    s, t = losses.match_spatial(f_inh, f_t)
    l_inh = factor_distance(transform(s, variant), transform(t, variant), metric,
                            mask)
  if f_exp is not None:
    s, t = losses.match_spatial(f_exp, f_t)
    l_exp = exploration_distance(transform(s, variant), transform(t, variant),
                                 exp_metric, mask)
  return l_inh, l_exp


def _leaky(x):
  return nn.leaky_relu(x, negative_slope=0.1)


class Coder(nn.Module):
  """Three 3x3 stride-1 convs (no bias), each + BN + LeakyReLU(0.1), with a LeakyReLU first.

  Channels: C_in -> C_in -> features -> features (official IE-KD `Coder(cin,
  cout)`: `relu(), conv(cin, cin), bn, relu, conv(cin, cout), bn, relu,
  conv(cout, cout), bn, relu` with LeakyReLU 0.1 and N(0, sqrt(2 / (9 C_out)))
  conv init). The seed's Table 3 "deconvs" are these convs: a 3x3 transposed
  conv at stride 1 / padding 1 is an ordinary 3x3 conv.

  Attributes:
    features: output channels.
    leaky_input: apply the LeakyReLU to the input first (official; Table 3 has no such layer).
  """
  features: int
  leaky_input: bool = True

  @nn.compact
  def __call__(self, x, *, train: bool):
    cin = x.shape[-1]
    if self.leaky_input:
      x = _leaky(x)
    for i, c in enumerate((cin, self.features, self.features)):
      x = common.conv(c, 3, name=f'conv{i + 1}')(x)
      x = _leaky(common.batch_norm(train, f'bn{i + 1}')(x))
    return x


class FactorAutoEncoder(nn.Module):
  """IE-KD factor auto-encoder (the IE-KD paper Table 3, official `auto_encoder`).

  encoder: C -> C -> C/r -> C/r (the factor); decoder: C/r -> C/r -> C -> C.
  `__call__` returns (factor, reconstruction); `encode` returns the factor.
  """
  channels: int
  factor_channels: int
  leaky_input: bool = True

  def setup(self):
    self.encoder = Coder(self.factor_channels, self.leaky_input)
    self.decoder = Coder(self.channels, self.leaky_input)

  def __call__(self, x, *, train: bool):
    factor = self.encoder(x, train=train)
    return factor, self.decoder(factor, train=train)

  def encode(self, x, *, train: bool):
    return self.encoder(x, train=train)


_DEFAULT_METRIC = {'ft': 'l1', 'at': 'l1', 'od': 'l2'}


def _check_map(info: BuildInfo, who: str, key: str, method: str):
  shape = info.feature(who, key).shape
  if len(shape) != 4:
    raise ValueError(f'{method}: {who} feature {key!r} must be an NHWC map, got shape '
                     f'{tuple(shape)}; use e.g. "last_map" or "stage3".')
  return shape


def _check_options(method, variant, metric, exp_metric, rec_norm, split, factor_ratio,
                   inherit_ratio):
  if variant not in VARIANTS:
    raise ValueError(f'{method}: variant must be one of {VARIANTS}, got {variant!r}.')
  metric = _DEFAULT_METRIC[variant] if metric is None else metric
  exp_metric = metric if exp_metric is None else exp_metric
  for m in (metric, exp_metric):
    if m not in METRICS:
      raise ValueError(f'{method}: metric must be one of {METRICS}, got {m!r}.')
  if rec_norm not in ('l1', 'l2'):
    raise ValueError(f"{method}: rec_norm must be 'l1' (official) or 'l2' (paper), "
                     f'got {rec_norm!r}.')
  if split not in ('random', 'natural'):
    raise ValueError(f"{method}: split must be 'random' or 'natural', got {split!r}.")
  if not (isinstance(factor_ratio, int) and factor_ratio >= 1):
    raise ValueError(f'{method}: factor_ratio must be an integer >= 1, got {factor_ratio!r}.')
  num_inherit(1, inherit_ratio)  # range check
  return metric, exp_metric


def ie_term(info: BuildInfo, *, name: str, method: str, weight: float, phase: str, online: bool,
             s_key: str, t_key: str, variant: str, metric, exp_metric, inherit_ratio: float,
             inherit_weight: float, explore_weight: float, rec_weight: float, rec_norm: str,
             factor_ratio: int, split: str, ae_train_mode: bool, rec_backbone_grad: bool,
             leaky_input: bool, ce_key: str | None = None) -> Term:
  metric, exp_metric = _check_options(method, variant, metric, exp_metric, rec_norm, split,
                                      factor_ratio, inherit_ratio)
  if phase not in ('ae', 'distill'):
    raise ValueError(f"{method}: phase must be 'ae' (auto-encoder pretraining) or 'distill', "
                     f'got {phase!r}.')
  s_shape = _check_map(info, 'student', s_key, method)
  t_who = 'student' if online else 'teacher'
  t_shape = _check_map(info, t_who, t_key, method)
  c_s, c_t = int(s_shape[-1]), int(t_shape[-1])
  if c_t % factor_ratio:
    raise ValueError(f'{method}: teacher feature {t_key!r} has {c_t} channels, not divisible '
                     f'by factor_ratio={factor_ratio}.')
  c_f = c_t // factor_ratio
  n_inh = num_inherit(c_s, inherit_ratio)
  n_exp = c_s - n_inh
  (hs, ws), (ht, wt) = s_shape[1:3], t_shape[1:3]
  if not ((hs >= ht and ws >= wt) or (hs <= ht and ws <= wt)):
    raise ValueError(f'{method}: student {s_key!r} ({hs}x{ws}) and {t_who} {t_key!r} '
                     f'({ht}x{wt}) cannot be matched by pooling the larger map.')

  ae = FactorAutoEncoder(c_t, c_f, leaky_input=leaky_input)
  enc = Coder(c_f, leaky_input=leaky_input)

  def init(rng, ctx: Context):
    k_ae, k_inh, k_exp, k_perm = jax.random.split(rng, 4)
    t_feat = (ctx.student if online else ctx.teacher)[t_key]
    s_feat = ctx.student[s_key]
    params, stats = {}, {}
    v = ae.init(k_ae, t_feat, train=False)
    params['ae'], stats['ae'] = v['params'], v['batch_stats']
    for part, n, k in (('inh', n_inh, k_inh), ('exp', n_exp, k_exp)):
      if n:
        v = enc.init(k, s_feat[..., :n], train=False)
        params[part], stats[part] = v['params'], v['batch_stats']
    if split == 'random':
      perm = split_permutation(k_perm, c_s)
    else:
      perm = jnp.arange(c_s, dtype=jnp.int32)
    return {'params': params, 'batch_stats': stats, 'ie_split': {'perm': perm}}

  def ae_vars(aux):
    return {'params': aux['params']['ae'], 'batch_stats': aux['batch_stats']['ae']}

  def loss(aux, ctx: Context):
    stats = dict(aux['batch_stats'])
    source = ctx.student if online else ctx.teacher
    t_feat = source[t_key]
    metrics = {}
    total = jnp.zeros((), jnp.float32)
    if phase == 'ae' or online:
      x = t_feat if (online and rec_backbone_grad) else jax.lax.stop_gradient(t_feat)
      (factor_t, recon), stats['ae'] = modules.apply_variables(ae, ae_vars(aux), x,
                                                                   train=ctx.train)
      rec = reconstruction(x, recon, rec_norm, ctx.mask)
      metrics['rec'] = rec
      if phase == 'ae':
        return rec, metrics, {'batch_stats': stats}
      total = total + rec_weight * rec
    else:
      factor_t, new = modules.apply_variables(
          ae, ae_vars(aux), jax.lax.stop_gradient(t_feat), train=ctx.train and ae_train_mode,
          method=FactorAutoEncoder.encode)
      stats['ae'] = new
    factor_t = jax.lax.stop_gradient(factor_t)

    perm = aux['ie_split']['perm']
    f_inh, f_exp = channel_split(ctx.student[s_key], perm, n_inh)
    factors = {}
    for part, f, n in (('inh', f_inh, n_inh), ('exp', f_exp, n_exp)):
      if n:
        v = {'params': aux['params'][part], 'batch_stats': aux['batch_stats'][part]}
        factors[part], stats[part] = modules.apply_variables(enc, v, f, train=ctx.train)
    l_inh, l_exp = inheritance_exploration(factors.get('inh'), factors.get('exp'), factor_t,
                                             variant=variant, metric=metric,
                                             exp_metric=exp_metric, mask=ctx.mask)
    metrics.update(inh=l_inh, exp=l_exp)
    total = total + inherit_weight * l_inh + explore_weight * l_exp
    if ce_key is not None:
      ce = losses.masked_mean(optax.softmax_cross_entropy_with_integer_labels(
          ctx.student[ce_key].astype(jnp.float32), ctx.labels), ctx.mask)
      metrics['ce'] = ce
      total = total + ce
    return total, metrics, {'batch_stats': stats}

  # The auto-encoder stage trains only the AE on frozen features: student in eval mode.
  # Masked batches: every mean above runs over ctx.mask's rows and the AE / encoder BN
  # (train mode) is masked by the step, so the term honours the mask itself.
  needs = Needs(student_eval=(phase == 'ae'))
  return Term(name=name, method=method, weight=float(weight), loss=loss, init=init, needs=needs,
              needs_teacher=not online, masked=True)


@register_method('ie_kd', family='features', paper='Huang et al. 2021, Revisiting Knowledge '
                 'Distillation: An Inheritance and Exploration Framework (IE-KD)')
def build_ie_kd(info: BuildInfo, *, weight: float = 1.0, phase: str = 'distill',
                variant: str = 'ft', metric: str | None = None, exp_metric: str | None = None,
                inherit_ratio: float = 0.5, inherit_weight: float = 50.0,
                explore_weight: float = 50.0, student_feature: str = 'last_map',
                teacher_feature: str = 'last_map', factor_ratio: int = 2, rec_norm: str = 'l1',
                split: str = 'random', ae_train_mode: bool = False,
                leaky_input: bool = True) -> Term:
  """IE-KD with a pretrained teacher: phase 'ae' trains the factor AE, 'distill' the student.

  variant: 'ft' (IE-FT), 'at' (IE-AT: attention maps of the factors) or 'od'
  (IE-OD: relu factors, L2); metric: 'l1' | 'l2' | 'cos' | 'partial_l2'
  (default per variant; `exp_metric` for the exploration term).
  inherit_ratio: the share of student channels in the inheritance part
  (Table 5's eta; 0 or 1 drops a part). The AE's BN runs in eval mode in
  the 'distill' phase (official) unless ae_train_mode.
  """
  return ie_term(info, name='ie', method='ie_kd', weight=weight, phase=phase, online=False,
                  s_key=student_feature, t_key=teacher_feature, variant=variant, metric=metric,
                  exp_metric=exp_metric, inherit_ratio=inherit_ratio,
                  inherit_weight=inherit_weight, explore_weight=explore_weight, rec_weight=0.0,
                  rec_norm=rec_norm, factor_ratio=factor_ratio, split=split,
                  ae_train_mode=ae_train_mode, rec_backbone_grad=False, leaky_input=leaky_input)


def _variant_builder(variant: str):
  def build(info: BuildInfo, *, weight: float = 1.0, phase: str = 'distill',
            metric: str | None = None, exp_metric: str | None = None,
            inherit_ratio: float = 0.5, inherit_weight: float = 50.0,
            explore_weight: float = 50.0, student_feature: str = 'last_map',
            teacher_feature: str = 'last_map', factor_ratio: int = 2, rec_norm: str = 'l1',
            split: str = 'random', ae_train_mode: bool = False,
            leaky_input: bool = True) -> Term:
    return ie_term(info, name='ie', method=f'ie_{variant}', weight=weight, phase=phase,
                    online=False, s_key=student_feature, t_key=teacher_feature, variant=variant,
                    metric=metric, exp_metric=exp_metric, inherit_ratio=inherit_ratio,
                    inherit_weight=inherit_weight, explore_weight=explore_weight,
                    rec_weight=0.0, rec_norm=rec_norm, factor_ratio=factor_ratio, split=split,
                    ae_train_mode=ae_train_mode, rec_backbone_grad=False,
                    leaky_input=leaky_input)
  build.__doc__ = f'IE-KD with variant={variant!r} (same hyper-parameters as `ie_kd`).'
  return build


build_ie_ft = register_method('ie_ft', family='features', paper='IE-KD (Huang et al. 2021): IE-FT')(
    _variant_builder('ft'))


build_ie_at = register_method('ie_at', family='features', paper='IE-KD (Huang et al. 2021): IE-AT')(
    _variant_builder('at'))


build_ie_od = register_method('ie_od', family='features', paper='IE-KD (Huang et al. 2021): IE-OD')(
    _variant_builder('od'))
