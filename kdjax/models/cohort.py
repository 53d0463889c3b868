"""A cohort of independent networks trained as one student (DML, IE-DML).

Parameters live under 'member<i>/...', so update groups and per-member
optimizer states address them by path. Features are every member feature
prefixed 'member<i>/' plus 'ensemble/logits' (log of the mean softmax); the
main logits are member 0's. The evaluator reports every '*/logits' feature.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from kdjax.models.spec import ModelSpec, with_prefix


class Cohort(nn.Module):
  members: Sequence[nn.Module]

  def setup(self):
    # Explicit names give stable parameter paths: 'member0', 'member1', ...
    self.nets = [m.clone(name=f'member{i}', parent=self) for i, m in enumerate(self.members)]

  def spec(self) -> ModelSpec:
    """Members' specs under 'member<i>/'; stages and layouts are those every member shares."""
    specs = [m.spec() for m in self.members]
    names = []
    for i, s in enumerate(specs):
      names += [f'member{i}/{k}' for k in s.feature_names] + [f'member{i}/logits']
    names.append('ensemble/logits')
    num_stages = min(s.num_stages for s in specs)
    stage_params = ()
    if all(s.stage_params for s in specs):
      stage_params = tuple(
          tuple(r for i, s in enumerate(specs) for r in with_prefix(s.stage_params[k], f'member{i}/'))
          for k in range(num_stages + 1))
    return ModelSpec(
        arch='cohort(' + ','.join(s.arch for s in specs) + ')', feature_names=tuple(names),
        num_stages=num_stages, num_blocks=0,
        bn_before_relu={f'member{i}/{k}': (f'member{i}',) + tuple(p)
                        for i, s in enumerate(specs) for k, p in s.bn_before_relu.items()},
        has_forward_from=False, stage_params=stage_params)

  def __call__(self, x, *, train: bool = False):
    feats, probs = {}, []
    for i, net in enumerate(self.nets):
      logits, f = net(x, train=train)
      feats.update({f'member{i}/{k}': v for k, v in f.items()})
      feats[f'member{i}/logits'] = logits
      probs.append(jax.nn.softmax(logits))
    feats['ensemble/logits'] = jnp.log(jnp.mean(jnp.stack(probs), 0) + 1e-12)
    return feats['member0/logits'], feats
