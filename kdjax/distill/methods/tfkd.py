"""Teacher-free KD (Yuan et al. 2020, Revisiting Knowledge Distillation via Label Smoothing
Regularization): `tfkd_reg` (virtual teacher) and `tfkd_self` (self-training).

Formulas (official code `loss_kd_regularization`, `loss_kd_self`):
  tfkd_reg:  m * KLDiv_elementwise-mean(log softmax(z), softmax(p^d / tau)),
             p^d = correct_prob on the label, (1 - correct_prob)/(K - 1) elsewhere
             (paper_form=True: m * KL(softmax(log p^d / tau) || softmax(z / tau)))
  tfkd_self: m * tau^2 * KLDiv_elementwise-mean(log softmax(z_s/tau), softmax(z_t/tau))
The (1 - alpha) CE and alpha factors are the config's ce_weight and the term weight.

  dict(method='tfkd_reg', weight=0.1)            # ce_weight 0.9
  dict(method='tfkd_self', weight=0.95)          # teacher: a trained copy of the student
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from kdjax import losses
from kdjax.distill import checks
from kdjax.distill.api import BuildInfo, Context, Term, no_aux, register_method
from kdjax.distill.methods.kd import kd_per_sample

Array = jax.Array


def label_smoothing_kd(student_logits: Array, labels: Array, num_classes: int, *,
                       correct_prob: float = 0.99, temperature: float = 20.0,
                       multiplier: float = 100.0, paper_form: bool = False,
                       per_sample: bool = False) -> Array:
  """Tf-KD's virtual-teacher regulariser (Yuan et al. 2020, `loss_kd_regularization`).

  The virtual teacher p^d puts `correct_prob` on the label and
  (1 - correct_prob)/(K - 1) on every other class.

  Official-code form (default): target = softmax(p^d / tau) -- the softmax is
  applied to the *probabilities* -- and the student is not temperature-scaled:
  multiplier * KLDiv(log softmax(z), target) with PyTorch's default
  elementwise-mean reduction over N*K (= batchmean / K).

  Paper form (`paper_form=True`): multiplier * KL(p^d_tau || p_tau), batchmean,
  with p^d_tau = softmax(log p^d / tau) and p_tau = softmax(z / tau); use
  multiplier=1 for the paper's exact term.

  The (1 - alpha) CE mixing is not included: the config sets
  ce_weight = 1 - alpha and the term weight = alpha.

  Args:
    student_logits: [N, K].
    labels: [N] integer class indices.
    num_classes: K (must equal the logits' last dimension, and be >= 2).
    correct_prob: probability of the label under the virtual teacher.
    temperature: tau.
    multiplier: m, the official code's multiplier.
    paper_form: use the paper's KL instead of the official code's.
    per_sample: return each sample's loss [N] (whose mean is the loss) instead.

  Returns:
    A scalar (or [N]).
  """
  chex.assert_rank([student_logits, labels], [2, 1])
  chex.assert_equal_shape_prefix([student_logits, labels], 1)
  if student_logits.shape[-1] != num_classes or num_classes < 2:
    raise ValueError(f'label_smoothing_kd: logits have {student_logits.shape[-1]} classes, '
                     f'num_classes={num_classes} (need equal and >= 2).')
  onehot = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
  p_d = onehot * correct_prob + (1.0 - onehot) * (1.0 - correct_prob) / (num_classes - 1)
  z = student_logits.astype(jnp.float32)
  if paper_form:
    log_target = jax.nn.log_softmax(jnp.log(p_d) / temperature, axis=-1)
    log_p = jax.nn.log_softmax(z / temperature, axis=-1)
    kl = jnp.sum(jnp.exp(log_target) * (log_target - log_p), axis=-1)
    return multiplier * (kl if per_sample else jnp.mean(kl))
  log_target = jax.nn.log_softmax(p_d / temperature, axis=-1)
  log_p = jax.nn.log_softmax(z, axis=-1)
  elementwise = jnp.exp(log_target) * (log_target - log_p)
  return multiplier * (jnp.mean(elementwise, axis=-1) if per_sample else jnp.mean(elementwise))


def tfkd_self(student_logits: Array, teacher_logits: Array, *, temperature: float = 6.0,
              multiplier: float = 50.0) -> Array:
  """Tf-KD self-training term (Yuan et al. 2020, official `loss_kd_self`).

  multiplier * tau^2 * KLDivLoss(log_softmax(z_s/tau), softmax(z_t/tau)) with
  PyTorch's default elementwise-mean reduction over N*K (= batchmean / K;
  0 log 0 = 0). The (1 - alpha) CE and alpha factors are the config's
  ce_weight and the term weight.
  """
  # Elementwise mean over N*K = (sum over classes, mean over the batch) / K = kd / K.
  return multiplier * losses.kd(student_logits, teacher_logits, temperature=temperature) / \
      student_logits.shape[-1]


@register_method('tfkd_reg', family='logits', paper='Yuan et al. 2020, Revisiting Knowledge '
                 'Distillation via Label Smoothing Regularization (Tf-KD reg)')
def build_tfkd_reg(info: BuildInfo, *, weight: float = 0.1, correct_prob: float = 0.99,
                   temperature: float = 20.0, multiplier: float = 100.0,
                   paper_form: bool = False) -> Term:
  """Teacher-free KD with a virtual teacher (official ResNet18 config).

  The official loss is (1 - alpha) CE + alpha * reg with alpha = 0.1: set the
  config's ce_weight = 1 - alpha = 0.9 and this term's weight = alpha = 0.1.
  """
  checks.check_logits(info, teacher=False)
  checks.positive('tfkd_reg', temperature=temperature)
  if not 0.0 < correct_prob < 1.0:
    raise ValueError(f'tfkd_reg: correct_prob must be in (0, 1), got {correct_prob!r}.')
  if info.num_classes < 2:
    raise ValueError(f'tfkd_reg: needs at least 2 classes, got {info.num_classes}.')
  num_classes = info.num_classes

  def loss(ctx: Context, per_sample: bool = False):
    return label_smoothing_kd(ctx.student['logits'], ctx.labels, num_classes,
                                     correct_prob=correct_prob, temperature=temperature,
                                     multiplier=multiplier, paper_form=paper_form,
                                     per_sample=per_sample)
  return Term(name='tfkd_reg', method='tfkd_reg', weight=float(weight), loss=no_aux(loss),
              per_sample=no_aux(lambda ctx: loss(ctx, per_sample=True)), needs_teacher=False)


@register_method('tfkd_self', family='self', paper='Yuan et al. 2020, Revisiting Knowledge '
                 'Distillation via Label Smoothing Regularization (Tf-KD self)')
def build_tfkd_self(info: BuildInfo, *, weight: float = 0.95, temperature: float = 6.0,
                    multiplier: float = 50.0, require_same_arch: bool = True) -> Term:
  """Tf-KD self-training: the teacher is a trained copy of the student's own architecture.

  loss = (1 - alpha) CE + alpha * m * tau^2 * KLDivLoss_elementwise-mean; set
  ce_weight = 1 - alpha and weight = alpha (official CIFAR-100 ResNet18:
  alpha 0.95, tau 6, m 50; MobileNetV2: alpha 0.95, tau 20, m 1).
  `require_same_arch=False` allows any teacher (Tf-KD's "poorly-trained" and
  reversed-KD variants).
  """
  s, t = info.feature('student', 'logits'), info.feature('teacher', 'logits')
  if tuple(s.shape[1:]) != tuple(t.shape[1:]):
    raise ValueError(f'tfkd_self: student logits {tuple(s.shape)} and teacher logits '
                     f'{tuple(t.shape)} differ.')
  if require_same_arch and info.student_arch and info.teacher_arch and \
      info.student_arch != info.teacher_arch:
    raise ValueError(f'tfkd_self: the teacher must be a trained {info.student_arch} (self-'
                     f'training), got a {info.teacher_arch}; set require_same_arch=False to allow it.')
  checks.positive('tfkd_self', temperature=temperature)
  checks.nonneg('tfkd_self', multiplier=multiplier)

  def loss(ctx: Context):
    return tfkd_self(ctx.student['logits'], ctx.teacher['logits'], temperature=temperature,
                        multiplier=multiplier)

  def per_sample(ctx: Context):  # each sample's KL / K: its batch mean is the loss
    z = ctx.student['logits']
    return multiplier * kd_per_sample(z, ctx.teacher['logits'], temperature=temperature) / \
        z.shape[-1]
  return Term(name='tfkd_self', method='tfkd_self', weight=float(weight), loss=no_aux(loss),
              per_sample=no_aux(per_sample))
