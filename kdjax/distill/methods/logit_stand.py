"""Logit standardization KD (Sun et al. 2024, Logit Standardization in Knowledge Distillation).

Synopsis:
  dict(method='lskd', weight=9.0, temperature=2.0)     with config.distill.ce_weight = 0.1

Formula (paper eq. 10 / Algorithm 1; official `normalize` + `kd_loss` in
sunshangquan/logit-standardization-KD, `mdistiller/distillers/KD.py`):
  Z(z) = (z - mean_k z) / (eps + std_k z),   std with Bessel's correction (torch.std), eps = 1e-7
  L = tau^2 * mean_n KL(softmax(Z(z_t) / tau) || softmax(Z(z_s) / tau))
Each sample's logits are z-scored before the softened KL, so the student
matches the teacher's logit *relations*, not their range. The paper calls
tau the "base temperature" (the effective temperature is tau * std(z)).

CIFAR-100 (official README and `tools/train.py --logit-stand`): CE weight 0.1
(mdistiller's KD default), KD weight 9, tau = 2 for most pairs and 3 for
vgg13->vgg8, resnet32x4->wrn_16_2, resnet32x4->wrn_40_2, wrn_40_2->MobileNetV2
and vgg13->MobileNetV2 (the logs' names carry the temperature).
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from kdjax.distill.api import BuildInfo, Context, Term, no_aux, register_method

Array = jax.Array


# ----------------------------------------------------------------------------
# Pure losses

def standardize(logits: Array, eps: float = 1e-7) -> Array:
  """Z-score each row of [N, K] logits with the unbiased std (torch.std), as the reference.

  The std's gradient at zero variance is taken as 0 (not NaN): constant logits
  map to 0 whatever their value.
  """
  z = logits.astype(jnp.float32)
  k = z.shape[-1]
  if k < 2:
    raise ValueError(f'standardize: needs at least 2 classes, got {k}.')
  centred = z - jnp.mean(z, axis=-1, keepdims=True)
  var = jnp.sum(centred * centred, axis=-1, keepdims=True) / (k - 1)
  pos = var > 0
  std = jnp.where(pos, jnp.sqrt(jnp.where(pos, var, 1.0)), 0.0)
  return centred / (eps + std)


def lskd_per_sample(student_logits: Array, teacher_logits: Array, *, temperature: float = 2.0,
                    eps: float = 1e-7) -> Array:
  """`lskd` per sample [N]: tau^2 KL_n; its batch mean is `lskd`."""
  teacher_logits = jax.lax.stop_gradient(teacher_logits)
  log_ps = jax.nn.log_softmax(standardize(student_logits, eps) / temperature, axis=-1)
  log_pt = jax.nn.log_softmax(standardize(teacher_logits, eps) / temperature, axis=-1)
  return temperature ** 2 * jnp.sum(jnp.exp(log_pt) * (log_pt - log_ps), axis=-1)


def lskd(student_logits: Array, teacher_logits: Array, *, temperature: float = 2.0,
         eps: float = 1e-7) -> Array:
  """tau^2 KL(softmax(Z(z_t)/tau) || softmax(Z(z_s)/tau)), summed over classes, mean over batch.

  Args:
    student_logits: [N, K].
    teacher_logits: [N, K]; no gradient flows into them.
    temperature: the base temperature tau.
    eps: the reference's guard in the z-score denominator.

  Returns:
    A scalar; 0 when the student's logits are any positive affine map
    a z_t + b of the teacher's (the invariance the method is built on).
  """
  chex.assert_rank([student_logits, teacher_logits], 2)
  chex.assert_equal_shape([student_logits, teacher_logits])
  teacher_logits = jax.lax.stop_gradient(teacher_logits)
  log_ps = jax.nn.log_softmax(standardize(student_logits, eps) / temperature, axis=-1)
  log_pt = jax.nn.log_softmax(standardize(teacher_logits, eps) / temperature, axis=-1)
  kl = jnp.sum(jnp.exp(log_pt) * (log_pt - log_ps), axis=-1)
  return temperature ** 2 * jnp.mean(kl)


# ----------------------------------------------------------------------------
# Registration

@register_method('lskd', family='logits', paper='Sun et al. 2024, Logit Standardization in '
                 'Knowledge Distillation')
def build_lskd(info: BuildInfo, *, weight: float = 9.0, temperature: float = 2.0) -> Term:
  """KD on z-scored logits (CIFAR-100: weight 9, base tau 2, ce_weight 0.1)."""
  s = info.feature('student', 'logits')
  t = info.feature('teacher', 'logits')
  if len(s.shape) != 2 or tuple(s.shape[1:]) != tuple(t.shape[1:]) or s.shape[-1] < 2:
    raise ValueError(f'lskd: needs [N, K] logits (K >= 2) of equal class count, got student '
                     f'{tuple(s.shape)} and teacher {tuple(t.shape)}.')
  if not (isinstance(temperature, (int, float)) and temperature > 0):
    raise ValueError(f'lskd: temperature must be a number > 0, got {temperature!r}.')

  def loss(ctx: Context):
    return lskd(ctx.student['logits'], ctx.teacher['logits'], temperature=temperature)

  def per_sample(ctx: Context):
    return lskd_per_sample(ctx.student['logits'], ctx.teacher['logits'], temperature=temperature)
  return Term(name='lskd', method='lskd', weight=float(weight), loss=no_aux(loss),
              per_sample=no_aux(per_sample))
