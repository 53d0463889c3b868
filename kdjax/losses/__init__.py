"""Parameter-free distillation losses (pure functions on arrays).

Synopsis:
  Every loss takes student and teacher arrays (features NHWC, logits [N, K]),
  checks ranks and shapes on entry, stops the gradient into the teacher and
  returns a scalar whose reduction follows the reference code (METHODS.md).

  logits:     kd, dkd, soft_cross_entropy, label_smoothing_kd,
              weighted_soft_label_weights, wsld
  features:   attention, nst, fsp (+ attention_map, fsp_matrices,
              adaptive_avg_pool_to, match_spatial, l2_normalize)
  relational: similarity_preserving, rkd, rkd_distance, rkd_angle, pkt,
              correlation_congruence, correlation_congruence_rbf

Method registration (config term -> loss) lives in `kdjax.distill.methods`.
"""

from kdjax.losses.features import (adaptive_avg_pool_to, attention, attention_map, fsp,
                                   fsp_matrices, l2_normalize, match_spatial, nst)
from kdjax.losses.logits import (dkd, kd, label_smoothing_kd, soft_cross_entropy,
                                 weighted_soft_label_weights, wsld)
from kdjax.losses.relational import (correlation_congruence, correlation_congruence_rbf, pkt,
                                     rkd, rkd_angle, rkd_distance, similarity_preserving)

__all__ = [
    'adaptive_avg_pool_to', 'attention', 'attention_map', 'correlation_congruence',
    'correlation_congruence_rbf', 'dkd', 'fsp', 'fsp_matrices', 'kd', 'l2_normalize',
    'label_smoothing_kd', 'match_spatial', 'nst', 'pkt', 'rkd', 'rkd_angle', 'rkd_distance',
    'similarity_preserving', 'soft_cross_entropy', 'weighted_soft_label_weights', 'wsld',
]
