"""Registrations of the online and self-distillation methods (losses in `kdjax.losses.online`).

Synopsis:
      method     weight  what it reads                          config must set
      dml        1.0     student 'member{i}/logits' (a Cohort)  model.cohort, ce_weight 0,
                                                                 update_groups (paper order)
      one        1.0     'branch{i}/logits', 'ensemble/logits'  model.name one_<arch>, ce_weight 0
      tfkd_self  0.95    logits of student and teacher          teacher = a trained copy of
                                                                 the student, ce_weight 0.05
      bss        1.0     logits, images; reruns both models     ce_weight 1

  `dml` and `one` compute every cross-entropy themselves (each cohort member /
  branch and the ONE ensemble), so their configs set `distill.ce_weight = 0`;
  their `weight` scales the whole (CE + mimicry) sum, `kl_weight` the mimicry.
  Tf-KD's virtual-teacher regulariser is `tfkd_reg` (methods/basic.py); PS-KD
  is `pskd`.

  Example (DML, alternating updates as in the paper's Alg. 1):
      c.model.cohort = ('resnet32', 'resnet32')
      c.distill.ce_weight = 0.0
      c.distill.update_groups = ('^student/member0/', '^student/member1/')
      c.distill.terms = dict(dml=dict(method='dml', temperature=1.0))
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from kdjax.distill.api import BuildInfo, Context, Term, no_aux, register_method
from kdjax.distill.methods import aux_common as ac
from kdjax.losses import online as ol


def _count(info: BuildInfo, fmt: str) -> int:
  n = 0
  while fmt.format(n) in info.student_shapes:
    n += 1
  return n


def _nonneg(method: str, **values):
  for k, v in values.items():
    if not (isinstance(v, (int, float)) and v >= 0):
      raise ValueError(f'{method}: {k} must be a number >= 0, got {v!r}.')


def _same_logits(info: BuildInfo, method: str, keys):
  shapes = {k: tuple(info.feature('student', k).shape[1:]) for k in keys}
  if len(set(shapes.values())) != 1:
    raise ValueError(f'{method}: logits of different shapes {shapes}.')
  k = next(iter(shapes.values()))
  if k != (info.num_classes,):
    raise ValueError(f'{method}: logits {shapes} do not have num_classes={info.num_classes}.')


# ----------------------------------------------------------------------------
# DML

@register_method('dml', family='online', paper='Zhang et al. 2018, Deep Mutual Learning')
def build_dml(info: BuildInfo, *, weight: float = 1.0, temperature: float = 1.0,
              tau_squared: bool = False, reduction: str = 'mean', kl_weight: float = 1.0,
              include_ce: bool = True) -> Term:
  """Deep mutual learning over a cohort: sum_i [CE_i + mean_{j!=i} KL(p_j || p_i)].

  Reads 'member{i}/logits' of a `config.model.cohort` student. Defaults: the
  paper (tau 1, mean over peers); reduction='sum' is the official TF code;
  seed 002 uses tau 4 (its tau^2 scaling is unstated; `tau_squared` chooses).
  Set ce_weight 0 (the term computes every member's CE; `include_ce=False`
  leaves only member 0's to the step, which is rarely what you want).
  """
  m = _count(info, 'member{}/logits')
  if m < 2:
    raise ValueError(f'dml: needs a cohort student with >= 2 members (set config.model.cohort, '
                     f'e.g. (\'resnet32\', \'resnet32\')); student features have {m} '
                     "'member<i>/logits'.")
  keys = tuple(f'member{i}/logits' for i in range(m))
  _same_logits(info, 'dml', keys)
  ac.positive('dml', temperature=temperature)
  _nonneg('dml', kl_weight=kl_weight)
  if reduction not in ('mean', 'sum'):
    raise ValueError(f"dml: reduction must be 'mean' (paper) or 'sum' (official TF), got {reduction!r}.")

  def loss(ctx: Context):
    return ol.dml_loss([ctx.student[k] for k in keys], ctx.labels, temperature=temperature,
                       tau_squared=tau_squared, reduction=reduction, kl_weight=kl_weight,
                       include_ce=include_ce)
  return Term(name='dml', method='dml', weight=float(weight), loss=no_aux(loss), needs_teacher=False)


# ----------------------------------------------------------------------------
# ONE

@register_method('one', family='online', paper='Lan et al. 2018, Knowledge Distillation by '
                 'On-the-Fly Native Ensemble')
def build_one(info: BuildInfo, *, weight: float = 1.0, temperature: float = 3.0,
              rampup_epochs: float = 80.0, per_epoch_rampup: bool = True,
              ensemble_ce: bool = True, kl_weight: float = 1.0) -> Term:
  """ONE: sum_i CE(z_i) + CE(z_e) + w(e) sum_i tau^2 KL(q_e || p_i), tau 3, 80-epoch ramp-up.

  Needs a `one_<arch>` student (kdjax.models.one). The ensemble target is
  detached, so the KL trains the branches (and the shared trunk), never the
  gate. Set ce_weight 0 (or ensemble_ce=False with ce_weight 1: the main
  logits are the ensemble's).
  """
  m = _count(info, 'branch{}/logits')
  if m < 1 or 'ensemble/logits' not in info.student_shapes:
    raise ValueError(f'one: needs a ONE student (model.name one_<arch>, e.g. one_resnet32) with '
                     f"'branch<i>/logits' and 'ensemble/logits'; {info.student_arch or 'the student'} "
                     f'has features {sorted(info.student_shapes)}.')
  keys = tuple(f'branch{i}/logits' for i in range(m))
  _same_logits(info, 'one', keys + ('ensemble/logits',))
  ac.positive('one', temperature=temperature)
  _nonneg('one', rampup_epochs=rampup_epochs, kl_weight=kl_weight)

  def loss(ctx: Context):
    w = kl_weight * ol.one_rampup(ctx.progress, rampup_epochs, per_epoch=per_epoch_rampup)
    value, metrics = ol.one_loss([ctx.student[k] for k in keys], ctx.student['ensemble/logits'],
                                 ctx.labels, kl_weight=w, temperature=temperature,
                                 ensemble_ce=ensemble_ce)
    return value, {**metrics, 'rampup': w}
  return Term(name='one', method='one', weight=float(weight), loss=no_aux(loss), needs_teacher=False)


# ----------------------------------------------------------------------------
# Tf-KD self-training

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
  ac.positive('tfkd_self', temperature=temperature)
  _nonneg('tfkd_self', multiplier=multiplier)

  def loss(ctx: Context):
    return ol.tfkd_self(ctx.student['logits'], ctx.teacher['logits'], temperature=temperature,
                        multiplier=multiplier)
  return Term(name='tfkd_self', method='tfkd_self', weight=float(weight), loss=no_aux(loss))


# ----------------------------------------------------------------------------
# BSS

@register_method('bss', family='logits', paper='Heo et al. 2019, Knowledge Distillation with '
                 'Adversarial Samples Supporting Decision Boundary')
def build_bss(info: BuildInfo, *, weight: float = 1.0, temperature: float = 3.0,
              attack_size: int = 64, steps: int = 10, step_size: float = 0.3,
              clamp: float = 2.5, base: str = 'both', per_epoch_schedule: bool = True) -> Term:
  """BSS: r(e) L_soft(x) + r_a(e) L_soft(x_adv) with adversarial boundary-supporting samples.

  Defaults are the official CIFAR-10 script (tau 3, attack size 64, 10 steps of
  0.3, clamp 2.5); seed 002 uses tau 4, attack size 32. Base samples: correct for
  teacher and student (base='both', paper / METHODS.md) or for the teacher only
  (base='teacher', the official code), top `attack_size` by the distill score;
  the target class is sampled from the teacher's non-top-1 classes. The
  schedules use the 1-indexed epoch floor(progress) + 1 as the code does
  (per_epoch_schedule=False: continuous progress). The attack is skipped (no
  compute) once r_a = 0, i.e. after 75% of the stage. CE comes from the step
  (ce_weight 1).

  Fixed shapes: `min(attack_size, batch)` samples are always attacked and run
  through both networks; slots without an eligible sample are masked out of the
  loss, but still enter the student's train-mode BatchNorm statistics of that
  extra pass (the official code passes only the eligible ones).
  """
  s, t = info.feature('student', 'logits'), info.feature('teacher', 'logits')
  if tuple(s.shape[1:]) != tuple(t.shape[1:]):
    raise ValueError(f'bss: student logits {tuple(s.shape)} and teacher logits {tuple(t.shape)} differ.')
  ac.positive('bss', temperature=temperature, step_size=step_size, clamp=clamp)
  if not (isinstance(attack_size, int) and attack_size >= 1):
    raise ValueError(f'bss: attack_size must be an int >= 1, got {attack_size!r}.')
  if not (isinstance(steps, int) and steps >= 1):
    raise ValueError(f'bss: steps must be an int >= 1, got {steps!r}.')
  if base not in ('both', 'teacher'):
    raise ValueError(f"bss: base must be 'both' (paper) or 'teacher' (official code), got {base!r}.")

  def loss(aux, ctx: Context):
    del aux
    zs, zt = ctx.student['logits'], jax.lax.stop_gradient(ctx.teacher['logits'])
    epoch = jnp.floor(ctx.progress) + 1.0 if per_epoch_schedule else ctx.progress
    r = ol.bss_ratio(epoch, ctx.stage_epochs)
    ra = ol.bss_attack_ratio(epoch, ctx.stage_epochs)
    clean = ol.bss_soft_ce(zs, zt, temperature=temperature)
    idx, valid = ol.select_base_samples(zt, zs, ctx.labels, attack_size,
                                        require_student_correct=(base == 'both'))

    def attacked(_):
      x, t_logits = ctx.images[idx], zt[idx]
      target = ol.sample_target_class(ctx.rng, t_logits)
      gt = jnp.argmax(t_logits, -1)
      x_adv = ol.bss_attack(lambda xx: ctx.apply_teacher(xx)[0], x, valid, target, gt,
                            steps=steps, step_size=step_size, clamp=clamp)
      t_adv = jax.lax.stop_gradient(ctx.apply_teacher(x_adv)[0])
      s_adv = ctx.apply_student(x_adv)[0]
      return ol.bss_soft_ce(s_adv, t_adv, temperature=temperature, weights=valid)

    run = (ra > 0) & jnp.any(valid)
    adv = jax.lax.cond(run, attacked, lambda _: jnp.zeros((), jnp.float32), None)
    value = r * clean + ra * adv
    return value, {'ratio': r, 'attack_ratio': ra, 'clean': clean, 'adversarial': adv,
                   'attacked': jnp.sum(valid.astype(jnp.float32)) * run}, {}
  return Term(name='bss', method='bss', weight=float(weight), loss=loss)
