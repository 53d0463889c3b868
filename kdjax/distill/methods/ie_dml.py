"""IE-DML (Huang et al. 2021, IE-KD Sec. 3.3): inheritance and exploration inside a DML cohort.

Synopsis:
  IE-DML (`ie_dml`): a cohort of two networks; one term per member with an
  online auto-encoder over its *peer's* features (trained with
  rec_weight * L_rec, 0.8) and the two encoders of its own split:

      model.cohort = ('resnet32', 'resnet110')
      distill.ce_weight = 0.0                      # each term adds its member's CE
      distill.terms = {'ie_m0': dict(method='ie_dml', member=0, peer=1),
                       'ie_m1': dict(method='ie_dml', member=1, peer=0)}

  Term `ie_m0` holds member 1's auto-encoder; its reconstruction loss is part
  of member 1's objective (eq. 6: L_rec2), and by default its gradient also
  reaches member 1's backbone (`rec_backbone_grad`).

The losses, the factor auto-encoder and the channel split are IE-KD's (`ie_kd.py`);
this file only wires them between two members of a cohort.
"""

from __future__ import annotations

import dataclasses

from kdjax.distill import checks
from kdjax.distill.api import BuildInfo, Term, register_method
from kdjax.distill.methods.ie_kd import ie_term


@register_method('ie_dml', family='online', paper='Huang et al. 2021, IE-KD '
                 'Sec. 3.3: IE-DML')
def build_ie_dml(info: BuildInfo, *, weight: float = 1.0, member: int = 0, peer: int = 1,
                 feature: str = 'last_map', peer_feature: str | None = None,
                 variant: str = 'ft', metric: str | None = None, exp_metric: str | None = None,
                 inherit_ratio: float = 0.5, inherit_weight: float = 50.0,
                 explore_weight: float = 50.0, rec_weight: float = 0.8, rec_norm: str = 'l1',
                 factor_ratio: int = 2, split: str = 'random', rec_backbone_grad: bool = True,
                 leaky_input: bool = True, include_ce: bool = True, alternate: bool = True) -> Term:
  """IE-DML: member `member` inherits from / explores against member `peer` of a cohort.

  The term owns an auto-encoder trained online on the peer's map
  (rec_weight * L_rec) and the member's two split encoders. Use one term per
  member. With `alternate` (default) the members are updated one after another
  as in DML, member i with its own term's modules (the term declares the update
  groups). The term also computes the member's CE (include_ce, as `dml`): set
  ce_weight 0.
  """
  if member == peer:
    raise ValueError(f'ie_dml: member and peer must differ, got {member}.')
  s_key = f'member{member}/{feature}'
  t_key = f'member{peer}/{peer_feature or feature}'
  for k in (s_key, t_key):
    if k not in info.student_shapes:
      raise ValueError(f'ie_dml: student feature {k!r} does not exist; IE-DML needs '
                       f'config.model.cohort with at least {max(member, peer) + 1} members '
                       f'(features look like "member0/last_map").')
  term = ie_term(info, name=f'ie_m{member}', method='ie_dml', weight=weight, phase='distill',
                  online=True, s_key=s_key, t_key=t_key, variant=variant, metric=metric,
                  exp_metric=exp_metric, inherit_ratio=inherit_ratio,
                  inherit_weight=inherit_weight, explore_weight=explore_weight,
                  rec_weight=rec_weight, rec_norm=rec_norm, factor_ratio=factor_ratio,
                  split=split, ae_train_mode=True, rec_backbone_grad=rec_backbone_grad,
                  leaky_input=leaky_input,
                  ce_key=f'member{member}/logits' if include_ce else None)
  if not alternate:
    return term
  groups = {f'member{i}': (f'^student/member{i}/',)
            for i in range(checks.count_features(info, 'member{}/logits'))}
  groups[f'member{member}'] += ('^aux/{term}/',)
  return dataclasses.replace(term, needs=dataclasses.replace(term.needs, update_groups=groups))
