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


class Cohort(nn.Module):
  members: Sequence[nn.Module]

  def setup(self):
    # Explicit names give stable parameter paths: 'member0', 'member1', ...
    self.nets = [m.clone(name=f'member{i}', parent=self) for i, m in enumerate(self.members)]

  def __call__(self, x, *, train: bool = False):
    feats, probs = {}, []
    for i, net in enumerate(self.nets):
      logits, f = net(x, train=train)
      feats.update({f'member{i}/{k}': v for k, v in f.items()})
      feats[f'member{i}/logits'] = logits
      probs.append(jax.nn.softmax(logits))
    feats['ensemble/logits'] = jnp.log(jnp.mean(jnp.stack(probs), 0) + 1e-12)
    return feats['member0/logits'], feats
