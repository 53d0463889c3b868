"""OKDDip (Chen et al. 2020, Online Knowledge Distillation with Diverse Peers).

Synopsis:
  model.name = 'okddip_resnet32'; distill.ce_weight = 1.0 (the leader's CE); no teacher
  dict(method='okddip', weight=1.0, temperature=3.0, alpha=1.0, rampup_epochs=80)

Formula (official `train_GL.py`, `utils.KL_Loss`): with peers z_1..z_P, their
attention-aggregated targets t_i (see `kdjax.models.okddip`) and the leader z_L,
  KL_T(z, t) = T^2 / N sum_n sum_k q_nk (log q_nk - log softmax(z_n / T)_k),
               q = softmax(t / T) + 1e-7
  L = CE(z_L) + sum_i CE(z_i)
      + alpha w(e) [sum_i KL_T(z_i, t_i) + KL_T(z_L, mean_i z_i)]
  w(e) = exp(-5 (1 - min(e, 80) / 80)^2),   e = the 0-indexed epoch
The targets are NOT detached, as in the official code: that is how the query
and key projections (and the peers, through the leader's target) are trained.
This term returns everything but CE(z_L), which the step adds with ce_weight
(the model's main logits are the leader's). Official CIFAR settings: 4
branches (3 peers + leader), T = 3, alpha = 1, SGD lr 0.1 Nesterov momentum
0.9, wd 5e-4, batch 128, 300 epochs, lr /10 at 150 and 225.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from kdjax.distill.api import BuildInfo, Context, Term, no_aux, register_method

Array = jax.Array


# ----------------------------------------------------------------------------
# Pure losses

def okddip_kl(student_logits: Array, target_logits: Array, temperature: float = 3.0) -> Array:
  """Official `KL_Loss`: T^2 * KLDiv(log p_s, softmax(t / T) + 1e-7, batchmean); t not detached."""
  log_p = jax.nn.log_softmax(student_logits.astype(jnp.float32) / temperature, axis=-1)
  q = jax.nn.softmax(target_logits.astype(jnp.float32) / temperature, axis=-1) + 1e-7
  return temperature ** 2 * jnp.sum(q * (jnp.log(q) - log_p)) / student_logits.shape[0]


def consistency_weight(progress: Array, rampup_epochs: float = 80.0) -> Array:
  """exp(-5 (1 - clip(e, 0, L) / L)^2) at the 0-indexed epoch e = floor(progress); 1 if L = 0."""
  if rampup_epochs <= 0:
    return jnp.ones(())
  e = jnp.clip(jnp.floor(progress), 0.0, rampup_epochs)
  phase = 1.0 - e / rampup_epochs
  return jnp.exp(-5.0 * phase * phase)


def okddip_loss(peer_logits: Sequence[Array], peer_targets: Array, leader_logits: Array,
                labels: Array, *, kl_weight: Array | float, temperature: float = 3.0):
  """sum_i CE(z_i) + kl_weight [sum_i KL_T(z_i, t_i) + KL_T(z_L, mean_i z_i)] and its parts.

  Args:
    peer_logits: P arrays [N, K].
    peer_targets: [N, P, K] aggregated targets t_i.
    leader_logits: [N, K].
    labels: [N] integer labels.
    kl_weight: alpha * w(e).
    temperature: T.

  Returns:
    (scalar loss, metrics dict).
  """
  if peer_targets.shape[1] != len(peer_logits):
    raise ValueError(f'okddip_loss: {len(peer_logits)} peers but targets for '
                     f'{peer_targets.shape[1]}.')
  ce = sum(jnp.mean(-jnp.take_along_axis(jax.nn.log_softmax(z.astype(jnp.float32), -1),
                                         labels[:, None], axis=-1))
           for z in peer_logits)
  group = sum(okddip_kl(z, peer_targets[:, i], temperature) for i, z in enumerate(peer_logits))
  leader = okddip_kl(leader_logits, jnp.mean(jnp.stack(peer_logits, -1), axis=-1), temperature)
  return ce + kl_weight * (group + leader), {'peer_ce': ce, 'group_kl': group, 'leader_kl': leader}


# ----------------------------------------------------------------------------
# Registration

@register_method('okddip', family='online', paper='Chen et al. 2020, Online Knowledge '
                 'Distillation with Diverse Peers')
def build_okddip(info: BuildInfo, *, weight: float = 1.0, temperature: float = 3.0,
                 alpha: float = 1.0, rampup_epochs: float = 80.0) -> Term:
  """OKDDip: peers learn attention-aggregated targets, the leader the peers' mean (T 3)."""
  shapes = info.student_shapes
  m = 0
  while f'branch{m}/logits' in shapes:
    m += 1
  if m < 3 or 'peers/targets' not in shapes:
    raise ValueError(f"okddip: needs an OKDDip student (model.name okddip_<arch>, e.g. "
                     f"okddip_resnet32) with 'branch<i>/logits' and 'peers/targets'; "
                     f"{info.student_arch or 'the student'} has features {sorted(shapes)}.")
  if tuple(shapes['peers/targets'].shape[1:]) != (m - 1, info.num_classes):
    raise ValueError(f"okddip: 'peers/targets' {tuple(shapes['peers/targets'].shape)} does not "
                     f'hold {m - 1} peers x {info.num_classes} classes.')
  if not (isinstance(temperature, (int, float)) and temperature > 0):
    raise ValueError(f'okddip: temperature must be a number > 0, got {temperature!r}.')
  for k, v in (('alpha', alpha), ('rampup_epochs', rampup_epochs)):
    if not (isinstance(v, (int, float)) and v >= 0):
      raise ValueError(f'okddip: {k} must be a number >= 0, got {v!r}.')
  peers = tuple(f'branch{i}/logits' for i in range(m - 1))
  leader = f'branch{m - 1}/logits'

  def loss(ctx: Context):
    w = alpha * consistency_weight(ctx.progress, rampup_epochs)
    value, metrics = okddip_loss([ctx.student[k] for k in peers], ctx.student['peers/targets'],
                                 ctx.student[leader], ctx.labels, kl_weight=w,
                                 temperature=temperature)
    return value, {**metrics, 'rampup': w}
  return Term(name='okddip', method='okddip', weight=float(weight), loss=no_aux(loss),
              needs_teacher=False)
