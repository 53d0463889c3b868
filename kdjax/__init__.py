"""kdjax: knowledge distillation for vision in JAX/Flax.

Layout:
  kdjax.models   architectures returning (logits, features)
  kdjax.data     datasets (embedded digits, TFDS, folders) and on-device augmentation
  kdjax.losses   distillation losses as pure functions
  kdjax.distill  the method registry: config terms -> losses (+ auxiliary modules)
  kdjax.train    the generic train step, loop, checkpoints, metrics
  kdjax.main     the `kdjax` command line
"""

__version__ = '0.1.0'
