"""kdjax: knowledge distillation for vision in JAX/Flax.

Layout:
  kdjax.models   architectures returning (logits, features)
  kdjax.data     datasets (embedded digits, TFDS, folders) and on-device augmentation
  kdjax.losses   distillation losses as pure functions
  kdjax.distill  the method registry: config terms -> losses (+ auxiliary modules)
  kdjax.train    the generic train step, loop, checkpoints, metrics
  kdjax.main     the `kdjax` command line
"""

from kdjax import xla_env as _xla_env

# Before any JAX backend starts: XLA reads XLA_FLAGS once (kdjax/xla_env.py says why).
_xla_env.apply()

__version__ = '0.1.0'
