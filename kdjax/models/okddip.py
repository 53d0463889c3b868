"""OKDDip's multi-branch network (Chen et al. 2020, Online Knowledge Distillation with Diverse
Peers; official `models/model_cifar/resnet_GL.py`), for CIFAR ResNets.

Synopsis:
  model = create_okddip('resnet32', num_classes=100, branches=4)
  logits, feats = model.apply(variables, images, train=False)   # logits = the group leader's

Structure: the trunk of ONE (stem, stage 1, stage 2 of a CIFAR resnet{6n+2}
with option-B shortcuts) and `branches` copies of stage 3 with their own
classifiers (`kdjax.models.one`'s branch). Branches 0..m-2 are the auxiliary
peers, branch m-1 is the group leader (the model kept for inference). Each
peer's pooled feature h_i [64] is projected by shared bias-free linear maps
to a query q_i = W_q h_i and a key k_i = W_k h_i of size 64 / factor (8);
  a_ij = softmax_j(q_i . k_j),    t_i = sum_j a_ij z_j
is peer i's aggregated target (z_j: peer j's logits). The leader has no
query/key (the official non-`en` forward).

Features: `stem`, `stage1`, `stage2`, `branch{i}/stage3|pooled|logits`,
`peers/attention` [N, P, P], `peers/targets` [N, P, K] (t_i, not detached:
the official loss trains W_q, W_k through them), and the leader's `stage3`,
`last_map`, `pooled` and `logits` under the plain names.
Parameter count, ResNet-32 with 4 branches on 7 classes: 1,530,092 (the
paper's 1.53M).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from kdjax.models import common
from kdjax.models.one import _ResNetBranch, resnet_depth, resnet_trunk
from kdjax.models.spec import ModelSpec, names_regex

# PyTorch's default Linear init, U(+-1/sqrt(fan_in)).
_torch_linear_init = common.dense_kernel_init


def peer_attention(queries, keys, peer_logits):
  """a = softmax_j(q_i . k_j) [N, P, P] and targets t_i = sum_j a_ij z_j [N, P, K]."""
  energy = jnp.einsum('npd,nqd->npq', queries, keys)
  attention = jax.nn.softmax(energy, axis=-1)
  return attention, jnp.einsum('npq,nqk->npk', attention, peer_logits)


class OKDDipNet(nn.Module):
  """Peers + group leader on a CIFAR ResNet trunk.

  Attributes:
    depth: base depth 6n+2.
    num_classes: classifier outputs.
    branches: peers + 1 leader (official default 4).
    factor: query/key size is 64 // factor (official 8).
    block: 'basic' | 'bottleneck' (the official resnet110 uses bottlenecks).
    arch: name for messages.
  """
  depth: int
  num_classes: int
  branches: int = 4
  factor: int = 8
  block: str = 'basic'
  arch: str = 'okddip'
  dtype: Any = None
  bn_unbiased_running_var: bool = False

  def spec(self) -> ModelSpec:
    branch = [f'branch{b}/{k}' for b in range(self.branches)
              for k in ('stage3', 'pooled', 'logits')]
    names = ('stem', 'stage1', 'stage2', *branch, 'peers/attention', 'peers/targets', 'stage3',
             'last_map', 'pooled')
    # Stage 3 exists once per branch: params_up_to(3) is every branch's stage 3 (the
    # `stage3` feature itself is the leader's), as ONE's.
    return ModelSpec(
        arch=self.arch, feature_names=names, num_stages=3, num_blocks=0, bn_before_relu={},
        has_forward_from=False,
        stage_params=((names_regex(['conv1', 'bn1']),), (r'^layer1_\d+/',), (r'^layer2_\d+/',),
                      (r'^branch\d+/layer3_\d+/',)))

  @nn.compact
  def __call__(self, x, *, train: bool = False, branch_scale: Any = None):
    common.no_branch_scale(branch_scale, self.arch)
    L = common.layers_of(self)
    feats = {}
    n = (self.depth - 2) // 6
    x = resnet_trunk(L, x, n, self.block, feats, train=train)

    width = 64 * (4 if self.block == 'bottleneck' else 1)
    query = nn.Dense(width // self.factor, use_bias=False, kernel_init=_torch_linear_init,
                     name='query_weight')
    key = nn.Dense(width // self.factor, use_bias=False, kernel_init=_torch_linear_init,
                   name='key_weight')
    peer_logits, queries, keys = [], [], []
    for b in range(self.branches):
      logits, stage3, last, pooled = _ResNetBranch(n, 64, self.block, self.num_classes, layers=L,
                                                   name=f'branch{b}')(x, train=train)
      feats[f'branch{b}/stage3'] = stage3
      feats[f'branch{b}/pooled'] = pooled
      feats[f'branch{b}/logits'] = logits
      if b < self.branches - 1:
        peer_logits.append(logits)
        queries.append(query(pooled))
        keys.append(key(pooled))
      else:
        feats['stage3'], feats['last_map'], feats['pooled'] = stage3, last, pooled
        feats['logits'] = logits
    attention, targets = peer_attention(jnp.stack(queries, 1), jnp.stack(keys, 1),
                                        jnp.stack(peer_logits, 1))
    feats['peers/attention'], feats['peers/targets'] = attention, targets
    return common.float32_outputs(feats['logits'], feats)



def create_okddip(base_arch: str, num_classes: int, branches: int = 4, factor: int = 8,
                  block: str = 'basic', **kw) -> OKDDipNet:
  """OKDDip network on a CIFAR 'resnet{6n+2}' (branches - 1 peers and one leader).

  **kw: `dtype`, `bn_unbiased_running_var` (as every zoo model).

  Raises:
    ValueError: unsupported base architecture, bad depth, fewer than 2 peers, bad block.
  """
  d = resnet_depth(base_arch, 'okddip')
  if d is None:
    raise ValueError(f'create_okddip: unsupported base architecture {base_arch!r}; use '
                     'resnet{6n+2} (the official code has CIFAR ResNets).')
  if branches < 3:
    raise ValueError(f'create_okddip: needs >= 2 peers plus the leader, i.e. branches >= 3, '
                     f'got {branches}.')
  if block not in ('basic', 'bottleneck'):
    raise ValueError(f"create_okddip: block must be 'basic' or 'bottleneck', got {block!r}.")
  if factor < 1 or 64 % factor:
    raise ValueError(f'create_okddip: factor must divide 64, got {factor}.')
  return OKDDipNet(d, num_classes, branches=branches, factor=factor, block=block,
                   arch=f'okddip_{base_arch}', **kw)


FACTORIES: dict = {}   # okddip_<base> names are parsed by `match`
PATTERN_HELP = 'okddip_<base> (base resnet{6n+2})'


match = common.prefix_matcher('okddip_', create_okddip)


__all__ = ['OKDDipNet', 'create_okddip', 'peer_attention']
