"""Overhaul of feature distillation (Heo et al. 2019, ICCV; clovaai/overhaul-distillation).

Synopsis:
  dict(method='ofd', weight=1e-3)     pre-ReLU stage maps of both networks

Student pre-ReLU maps go through a 1x1 conv + BN connector to the teacher's
width; the teacher target is clamped from below by a per-channel margin
E[x | x < 0] of N(beta, gamma^2), from the teacher's BN before that ReLU
(`model.bn_before_relu()`, read from `ctx.teacher_variables` every step, which
equals the official buffers computed once since the teacher is frozen);
partial L2 (sum), stage i weighted 1/2^(n-i-1), divided by N; the weight 1e-3
is the official CIFAR /1000 (ImageNet: 1e-4). The official code keeps the
teacher in train mode: set config.teacher.train_mode=True for that.
Maps of different spatial size (cross-architecture pairs) are matched by
pooling the larger one (kdjax extension).
"""

from __future__ import annotations

from kdjax.distill import modules
from kdjax.distill.api import BuildInfo, Context, Term, register_method
from kdjax.distill.methods import aux_common as ac
from kdjax.losses import aux_losses


def _lookup(tree, path):
  node = tree
  for p in path:
    node = node[p]
  return node


def teacher_margins(teacher_params, bn_paths, channels):
  """Per-stage margins [C_t] from the teacher BN parameters at `bn_paths`."""
  out = []
  for path, c in zip(bn_paths, channels):
    bn = _lookup(teacher_params, path)
    gamma, beta = bn['scale'], bn['bias']
    if gamma.shape != (c,):
      raise ValueError(f'ofd: the teacher BN at {"/".join(path)} has {gamma.shape[0]} channels '
                       f'but its feature has {c}; OFD needs the BN that directly precedes the '
                       'ReLU of the whole map.')
    out.append(aux_losses.ofd_margin(gamma, beta))
  return out


@register_method('ofd', family='features', paper='Heo et al. 2019, A Comprehensive Overhaul of '
                 'Feature Distillation')
def build_ofd(info: BuildInfo, *, weight: float = 1e-3, student_features=None,
              teacher_features=None) -> Term:
  """OFD: connector + margin-clamped partial L2 on pre-ReLU stage maps (weight 1e-3, /N)."""
  s_keys, t_keys = ac.feature_pair(info, 'ofd', student_features, teacher_features,
                                   lambda: info.stages('student', preact=True),
                                   lambda: info.stages('teacher', preact=True))
  ac.require_maps(info, 'ofd', s_keys, t_keys)
  if info.teacher_arch.startswith('shufflenetv2'):
    raise ValueError('ofd: a shufflenetv2 teacher has no BN in front of the whole pre-ReLU map '
                     '(half of its channels bypass it), so OFD margins are undefined.')
  bn_map = info.bn_before_relu or {}
  missing = [k for k in t_keys if k not in bn_map]
  if missing:
    raise ValueError(f'ofd: teacher {info.teacher_arch or ""} has no BN-before-ReLU for '
                     f'{missing} (model.bn_before_relu() knows {sorted(bn_map)}).')
  paths = [tuple(bn_map[k]) for k in t_keys]
  channels = []
  conns = []
  for ks, kt in zip(s_keys, t_keys):
    s, t = ac.shape(info, 'student', ks), ac.shape(info, 'teacher', kt)
    ac.require_poolable('ofd', ks, kt, s, t)
    channels.append(t[-1])
    conns.append(modules.OFDConnector(t[-1]))

  def init(rng, ctx: Context):
    return ac.init_modules(rng, {f'connector{i}': (m, ctx.student[k])
                                 for i, (m, k) in enumerate(zip(conns, s_keys))})

  def loss(aux, ctx: Context):
    if ctx.teacher_variables is None:
      raise ValueError('ofd: the Context carries no teacher_variables (needed for the margins).')
    margins = teacher_margins(ctx.teacher_variables['params'], paths, channels)
    stats, outs = {}, []
    for i, ks in enumerate(s_keys):
      outs.append(ac.apply_module(conns[i], aux, f'connector{i}', ctx.student[ks], ctx.train,
                                  stats))
    value = aux_losses.ofd_loss(outs, [ctx.teacher[k] for k in t_keys], margins)
    return value, {}, ac.state_out(aux, stats)
  return Term(name='ofd', method='ofd', weight=float(weight), loss=loss, init=init)
