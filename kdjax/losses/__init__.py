"""Loss primitives shared by several distillation methods (pure functions on arrays).

Synopsis:
  logits:   kd (softened KL, tau^2), soft_cross_entropy, check_logit_pair
  features: l2_normalize, adaptive_avg_pool_to, match_spatial, attention_map,
            flat, f32, check_sequences, check_embeddings
  masking:  row_mean, masked_mean, valid_count, pair_weights (masked last batch)
  factors:  factor_distance, exploration_distance, linear_cka, reconstruction (IE-KD's
            distances; import from kdjax.losses.factors)

Each method's own loss lives with its builder in `kdjax.distill.methods.<method>`.
"""

from kdjax.losses.features import (adaptive_avg_pool_to, attention_map, check_embeddings,
                                   check_sequences, f32, flat, l2_normalize, match_spatial)
from kdjax.losses.logits import check_logit_pair, kd, soft_cross_entropy
from kdjax.losses.masking import masked_mean, pair_weights, row_mean, valid_count

__all__ = [
    'adaptive_avg_pool_to', 'attention_map', 'check_embeddings', 'check_logit_pair',
    'check_sequences', 'f32', 'flat', 'kd', 'l2_normalize', 'masked_mean', 'match_spatial',
    'pair_weights', 'row_mean', 'soft_cross_entropy', 'valid_count',
]
