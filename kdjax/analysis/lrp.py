"""Attribution maps: LRP (epsilon rule, BN folded) for the CIFAR ResNets, and gradient x input.

Synopsis:
  r = lrp(net, x01, target=None, eps=1e-6)            # [N, H, W] relevance maps
  r, sums = lrp(net, x01, return_sums=True)           # relevance total per layer
  r = lrp(net, x01, channels=net.ie.perm[:n])         # from a channel subset of last_map
  g = gradient_x_input(net, x01)                      # [N, H, W]

Layer-wise relevance propagation (Bach et al. 2015; Montavon et al. 2019,
"Layer-wise relevance propagation: an overview"), which IE-KD (Huang et al.
2021) uses for Figures 1(a) and 3. Every BatchNorm (eval mode) is folded into
the conv before it: w' = w * gamma / sqrt(var + 1e-5), b' = beta - mean * gamma /
sqrt(var + 1e-5). For an affine layer z_k = sum_j a_j w_jk + b_k the epsilon rule
is R_j = a_j sum_k w_jk R_k / (z_k + eps * sign(z_k)); ReLUs pass relevance
through; a residual sum z = y + s splits R in proportion to y / (z + eps sign z)
and s / (z + eps sign z); the global average pool is the affine map it is. The
relevance starts as the target logit (R_k = f_c(x) at k = c, 0 elsewhere), so
without biases and with eps -> 0 every layer's relevance sums to f_c(x)
(conservation). The map is the input relevance summed over colour channels,
taken on the normalised input that the first conv sees.

A stochastic-depth network (Self-Guidance) is explained as it is deployed: the
survival probability p_l of block l scales its branch, folded into the branch's
last conv (w' = p_l w, b' = p_l b), so the rules above apply unchanged.

For IE-KD's inheritance / exploration maps, `channels` keeps the relevance of
those last_map channels only and propagates it to the input.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

_BN_EPS = 1e-5  # kdjax.models.common.batch_norm


def fold_bn(kernel, bn_params, bn_stats):
  """(w', b') of conv(kernel) followed by eval-mode BN; kernel HWIO, scale on O."""
  scale = bn_params['scale'] / jnp.sqrt(bn_stats['var'] + _BN_EPS)
  return kernel * scale, bn_params['bias'] - bn_stats['mean'] * scale


def _conv(x, w, b, stride):
  p = w.shape[0] // 2
  y = jax.lax.conv_general_dilated(x, w, (stride, stride), ((p, p), (p, p)),
                                   dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  return y + b


def _stab(z, eps):
  return z + eps * jnp.where(z >= 0, 1.0, -1.0)


def _eps_rule(f, a, r, eps):
  """R_in = a * J_f^T (R / stab(f(a))) for an affine f (its Jacobian is the weights)."""
  z, vjp = jax.vjp(f, a)
  return a * vjp(r / _stab(z, eps))[0]


def _layers(model, variables, scales=None):
  """Folded (w, b, stride) of the stem and of every block's convs / shortcut.

  scales: optional per-block branch scales [num_blocks], folded into each
  branch's last conv (the block computes shortcut + s_l * branch).
  """
  if getattr(model, 'imagenet_stem', True) or not hasattr(model, 'stage_sizes'):
    raise ValueError(f'LRP is implemented for the CIFAR ResNets (resnet*, resnet*x4, '
                     f'resnet*_cifar); got {type(model).__name__}. Use gradient_x_input instead.')
  p, s = variables['params'], variables['batch_stats']
  stem = fold_bn(p['conv1']['kernel'], p['bn1'], s['bn1']) + (1,)
  blocks = []
  convs = ('conv1', 'conv2') if model.block == 'basic' else ('conv1', 'conv2', 'conv3')
  stride_conv = 'conv1' if model.block == 'basic' else 'conv2'
  for k, n in enumerate(model.stage_sizes):
    for i in range(n):
      name = f'layer{k + 1}_{i}'
      bp, bs = p[name], s[name]
      stride = 2 if (k > 0 and i == 0) else 1
      branch = [fold_bn(bp[c]['kernel'], bp['bn' + c[-1]], bs['bn' + c[-1]]) +
                (stride if c == stride_conv else 1,) for c in convs]
      if scales is not None:
        w, b, st = branch[-1]
        sl = scales[len(blocks)]
        branch[-1] = (w * sl, b * sl, st)
      short = None
      if 'shortcut_conv' in bp:
        short = fold_bn(bp['shortcut_conv']['kernel'], bp['shortcut_bn'], bs['shortcut_bn']) + (stride,)
      blocks.append((branch, short))
  return stem, blocks, (p['head']['kernel'], p['head']['bias'])


@functools.partial(jax.jit, static_argnames=('model',))
def folded_forward(model, variables, xn, scales=None):
  """Logits of the BN-folded network on normalised input (equals model.apply in eval mode,
  with branch_scale=scales)."""
  stem, blocks, (wh, bh) = _layers(model, variables, scales)
  h = jax.nn.relu(_conv(xn, *stem))
  for branch, short in blocks:
    y = h
    for j, (w, b, st) in enumerate(branch):
      y = _conv(y, w, b, st)
      if j < len(branch) - 1:
        y = jax.nn.relu(y)
    h = jax.nn.relu(y + (h if short is None else _conv(h, *short)))
  return jnp.mean(h, (1, 2)) @ wh + bh


@functools.partial(jax.jit, static_argnames=('model', 'eps'))
def _lrp(model, variables, xn, target, eps, mask, scales):
  stem, blocks, (wh, bh) = _layers(model, variables, scales)
  acts = [xn]
  h = jax.nn.relu(_conv(xn, *stem))
  saved = []
  for branch, short in blocks:
    ins = [h]
    y = h
    for j, (w, b, st) in enumerate(branch):
      y = _conv(y, w, b, st)
      if j < len(branch) - 1:
        y = jax.nn.relu(y)
        ins.append(y)
    sc = h if short is None else _conv(h, *short)
    saved.append((ins, y, sc))
    h = jax.nn.relu(y + sc)
  pooled = jnp.mean(h, (1, 2))
  logits = pooled @ wh + bh
  r = jax.nn.one_hot(target, logits.shape[-1]) * logits
  sums = [r.sum(-1)]
  r = _eps_rule(lambda a: a @ wh + bh, pooled, r, eps)
  sums.append(r.sum(-1))
  r = _eps_rule(lambda a: jnp.mean(a, (1, 2)), h, r, eps)
  r = r * mask  # 1 on the last_map channels whose relevance is propagated
  sums.append(r.sum((1, 2, 3)))
  for (branch, short), (ins, y, sc) in zip(blocks[::-1], saved[::-1]):
    z = _stab(y + sc, eps)
    r_y, r_s = y * r / z, sc * r / z
    for (w, b, st), a in zip(branch[::-1], ins[::-1]):
      r_y = _eps_rule(lambda a, w=w, b=b, st=st: _conv(a, w, b, st), a, r_y, eps)
    if short is not None:
      r_s = _eps_rule(lambda a: _conv(a, *short), ins[0], r_s, eps)
    r = r_y + r_s
    sums.append(r.sum((1, 2, 3)))
  r = _eps_rule(lambda a: _conv(a, *stem), xn, r, eps)
  sums.append(r.sum((1, 2, 3)))
  return r, jnp.stack(sums, 1)


def lrp(net, x01, target=None, *, eps: float = 1e-6, channels: Sequence[int] | None = None,
        return_sums: bool = False):
  """Epsilon-LRP relevance maps [N, H, W] of the target class (default: the prediction).

  Args:
    net: a `runs.Net` (or anything with `model`, `variables`, `normalize`) of a CIFAR ResNet.
    x01: images in [0, 1].
    target: int labels [N] of the explained class, or None for the predicted class.
    eps: the epsilon of the rule.
    channels: optional last_map channel indices whose relevance is propagated.
    return_sums: also return the relevance total per layer [N, L] (logit, pooled,
      last_map, each block input from the last to the first, input).
  """
  xn = net.normalize(jnp.asarray(x01))
  scales = getattr(net, 'survival', None)  # stochastic depth: the deployed (expected) network
  scales = None if scales is None else jnp.asarray(scales, jnp.float32)
  if target is None:
    target = folded_forward(net.model, net.variables, xn, scales).argmax(-1)
  c = net.variables['params']['head']['kernel'].shape[0]
  mask = np.ones(c, np.float32)
  if channels is not None:
    mask = np.zeros(c, np.float32)
    mask[np.asarray(channels, np.int64)] = 1.0
  r, sums = _lrp(net.model, net.variables, xn, jnp.asarray(target), float(eps), jnp.asarray(mask),
                 scales)
  maps = np.asarray(r.sum(-1))
  return (maps, np.asarray(sums)) if return_sums else maps


def gradient_x_input(net, x01, target=None):
  """x * d f_c(x) / dx in pixel space, summed over colour channels [N, H, W] (Shrikumar et al. 2016)."""
  x01 = jnp.asarray(x01)

  @jax.jit
  def fn(v, x, t):
    logits_fn = net.logits_fn(v)
    if t is None:
      t = logits_fn(x).argmax(-1)
    g = jax.grad(lambda x: jnp.sum(jnp.take_along_axis(logits_fn(x), t[:, None], 1)))(x)
    return (x * g).sum(-1)
  return np.asarray(fn(net.variables, x01, None if target is None else jnp.asarray(target)))
