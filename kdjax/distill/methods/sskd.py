"""SSKD: knowledge distillation meets self-supervision (Xu et al. 2020, ECCV).

Synopsis:
  stage 1: dict(method='sskd', phase='teacher_ss')   trains aux/sskd/teacher_head only
  stage 2: dict(method='sskd')                       student + aux/sskd/student_head
  with distill.ce_weight 0.1 in stage 2 and 0.0 in stage 1.

Both phases build the same term name 'sskd' with the same variables
{'student_head', 'teacher_head'}, so the teacher head trained in stage 1 is the
(frozen) one of stage 2. Restrict `stage.trainable`: stage 1
'^aux/sskd/teacher_head/', stage 2 '^student/', '^aux/sskd/student_head/'
(otherwise weight decay would still shrink the teacher head in stage 2).

Source: the official code (xuguodong03/SSKD: `student.py`, `wrapper.py`,
`cifar.py`); the paper's section 3 gives the same losses.

Batch: every image x_i and its rotations by 90, 180, 270 degrees (counter-
clockwise, as `np.rot90`), laid out rotation-major here: rows [0, N) are the
normal images, row r N + i (r = 1, 2, 3) is x_i rotated r times. The student
reruns on all 4N images (`ctx.apply_student`, one BN batch as in the official
code); the frozen teacher (eval mode) reruns on the 3N rotated ones.

SS module (official `wrapper.proj_head`): Linear(d, d) - ReLU - Linear(d, d)
on the pooled feature (d its width), one per network. Similarities
  S[j, i] = cos(h(aug_j), h(nor_i)),  j < 3N, i < N,  target(j) = j mod N.

Teacher phase (official teacher SS training, 60 epochs, backbone frozen):
  L = CE(S_t, target)     (no temperature).

Student phase, with a = aug rows, p^tau = softmax(. / tau):
  L_kd = tau_kd^2 KL(p_t^tau_kd || p_s^tau_kd)         over the N normal rows
  L_tf = tau_tf^2 KL(p_t^tau_tf || p_s^tau_tf)         over the kept aug rows
  L_ss = tau_ss^2 KL(softmax(S_t/tau_ss) || softmax(S_s/tau_ss))  over kept aug rows
  L    = w_kd L_kd + w_tf L_tf + w_ss L_ss   (+ ce_weight CE from the step)
KL is 'batchmean' over the rows it uses. Kept rows (official "error level
ranking"): rank_j = place of the target in the teacher's descending scores
(0 = correct); all correct rows are kept plus the floor(ratio * #wrong) wrong
rows of smallest rank (ties: lower row first). Official defaults: w = 0.9,
2.7, 10.0 with ce 0.1; tau = 4, 4, 0.5; ratio_tf = 1.0, ratio_ss = 0.75.

Masked batch (`ctx.mask`, data.drop_remainder=False): the padding rows and their
rotations leave every KL, the error-level ranking (counts and order) and the
similarity columns, and both passes on 4N / 3N rows take their BN statistics over
the valid rows' copies: the loss of the valid images alone.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from kdjax import losses
from kdjax.distill import checks
from kdjax.distill import modules
from kdjax.distill.api import BuildInfo, Context, Needs, Term, register_method

Array = jax.Array

COS_EPS = 1e-8  # torch F.cosine_similarity's eps
MASKED_SCORE = -1e9  # a similarity column of a masked image: out of every softmax and ranking


def rotations(x: Array) -> Array:
  """[N, H, W, C] -> [4N, H, W, C]: x, then x rotated 90, 180, 270 degrees (rotation-major)."""
  if x.ndim != 4 or x.shape[1] != x.shape[2]:
    raise ValueError(f'sskd: rotations need square NHWC images, got shape {tuple(x.shape)}.')
  return jnp.concatenate([jnp.rot90(x, k, axes=(1, 2)) for k in range(4)], axis=0)


def cosine_matrix(aug: Array, nor: Array) -> Array:
  """S[j, i] = <a_j, n_i> / max(|a_j| |n_i|, eps) (torch `F.cosine_similarity`)."""
  a, n = losses.f32(aug), losses.f32(nor)
  dots = a @ n.T
  norms = jnp.linalg.norm(a, axis=-1)[:, None] * jnp.linalg.norm(n, axis=-1)[None, :]
  return dots / jnp.maximum(norms, COS_EPS)


def target_rank(scores: Array, target: Array) -> Array:
  """Place of `target` in each row's descending order: #entries strictly above it."""
  own = jnp.take_along_axis(scores, target[:, None], axis=-1)
  return jnp.sum(scores > own, axis=-1)


def keep_mask(rank: Array, ratio: float, valid: Array | None = None) -> Array:
  """Official selection: all rank-0 rows plus floor(ratio * #wrong) wrong rows of smallest rank.

  Ties in rank go to the lower row (a stable sort; torch's argsort is unstable).
  With `valid` [M] (bool) only valid rows are counted, ranked and kept.
  """
  m = rank.shape[0]
  # int(wrong * ratio) in float64 as the official code, tabulated for every possible count.
  kept_wrong = jnp.asarray(np.array([int(w * ratio) for w in range(m + 1)], np.int32))
  if valid is None:
    wrong = jnp.sum(rank > 0)
    keep = (m - wrong) + kept_wrong[wrong]
    order = jnp.argsort(rank, stable=True)
  else:
    wrong = jnp.sum((rank > 0) & valid)
    keep = (jnp.sum(valid) - wrong) + kept_wrong[wrong]
    order = jnp.argsort(jnp.where(valid, rank, m + 1), stable=True)  # invalid rows last
  place = jnp.zeros_like(order).at[order].set(jnp.arange(order.shape[0]))
  return place < keep if valid is None else (place < keep) & valid


def masked_kl(student_scores: Array, teacher_scores: Array, temperature: float,
              mask: Array | None = None) -> Array:
  """tau^2 KL(softmax(t/tau) || softmax(s/tau)) summed over classes, mean over kept rows."""
  log_ps = jax.nn.log_softmax(losses.f32(student_scores) / temperature, axis=-1)
  log_pt = jax.nn.log_softmax(jax.lax.stop_gradient(losses.f32(teacher_scores)) / temperature,
                              axis=-1)
  kl = jnp.sum(jnp.exp(log_pt) * (log_pt - log_ps), axis=-1)
  if mask is None:
    return temperature ** 2 * jnp.mean(kl)
  m = mask.astype(jnp.float32)
  return temperature ** 2 * jnp.sum(kl * m) / jnp.maximum(jnp.sum(m), 1.0)


def ss_targets(n: int) -> Array:
  """Target normal row of each of the 3N rotated rows (rotation-major layout)."""
  return jnp.tile(jnp.arange(n), 3)


def mask_columns(simi: Array, valid: Array | None) -> Array:
  """Similarities to masked normal images (columns) pushed out of softmaxes and rankings."""
  return simi if valid is None else jnp.where(valid[None, :], simi, MASKED_SCORE)


def teacher_ss_loss(emb: Array, n: int, valid: Array | None = None) -> tuple[Array, Array]:
  """Teacher phase: CE(S, target) over the 3N rotated rows of `emb` [4N, d]; (loss, accuracy).

  `valid` [N] (bool, optional): only valid images count, as rows and as columns.
  """
  simi = mask_columns(cosine_matrix(emb[n:], emb[:n]), valid)
  target = ss_targets(n)
  ce = -jnp.take_along_axis(jax.nn.log_softmax(simi, -1), target[:, None], -1)[:, 0]
  acc = (jnp.argmax(simi, -1) == target).astype(jnp.float32)
  if valid is None:
    return jnp.mean(ce), jnp.mean(acc)
  rows = jnp.tile(valid, 3)
  return losses.masked_mean(ce, rows), losses.masked_mean(acc, rows)


def sskd_losses(s_logits: Array, t_logits: Array, s_emb: Array, t_emb: Array, labels: Array, *,
                kd_temperature: float = 4.0, tf_temperature: float = 4.0,
                ss_temperature: float = 0.5, ratio_tf: float = 1.0,
                ratio_ss: float = 0.75, valid: Array | None = None) -> dict[str, Array]:
  """The student-phase components on a rotation-major 4N batch (see the module docstring).

  Args:
    s_logits, t_logits: [4N, K] logits of the student and teacher.
    s_emb, t_emb: [4N, d_s], [4N, d_t] SS-module embeddings.
    labels: [N] class labels of the normal images.
    valid: optional bool [N]: the valid images of a masked batch (others leave
      every KL, ranking and similarity column).

  Returns:
    {'kd', 'tf', 'ss', 'tf_kept', 'ss_kept', 'ss_acc'}; no gradient reaches the teacher.
  """
  n = labels.shape[0]
  if s_logits.shape[0] != 4 * n or t_logits.shape != s_logits.shape:
    raise ValueError(f'sskd: expected [4N, K] logits for N={n}, got {s_logits.shape} and '
                     f'{t_logits.shape}.')
  t_logits = jax.lax.stop_gradient(t_logits)
  t_emb = jax.lax.stop_gradient(t_emb)
  rows = None if valid is None else jnp.tile(valid, 3)  # the rotated rows of valid images
  kd = masked_kl(s_logits[:n], t_logits[:n], kd_temperature, valid)
  # Transformation KD: the teacher's rank of the true class on each rotated image.
  t_aug = t_logits[n:]
  keep_tf = keep_mask(target_rank(t_aug, jnp.tile(labels, 3)), ratio_tf, rows)
  tf = masked_kl(s_logits[n:], t_aug, tf_temperature, keep_tf)
  # Self-supervision transfer: which normal image each rotated one came from.
  s_simi = mask_columns(cosine_matrix(s_emb[n:], s_emb[:n]), valid)
  t_simi = mask_columns(cosine_matrix(t_emb[n:], t_emb[:n]), valid)
  target = ss_targets(n)
  keep_ss = keep_mask(target_rank(t_simi, target), ratio_ss, rows)
  ss = masked_kl(s_simi, t_simi, ss_temperature, keep_ss)
  mean = jnp.mean if rows is None else (lambda x: losses.masked_mean(x, rows))
  return {'kd': kd, 'tf': tf, 'ss': ss,
          'tf_kept': mean(keep_tf.astype(jnp.float32)),
          'ss_kept': mean(keep_ss.astype(jnp.float32)),
          'ss_acc': mean((jnp.argmax(s_simi, -1) == target).astype(jnp.float32))}


class SSHead(nn.Module):
  """Official `wrapper.proj_head`: Linear(d, d) - ReLU - Linear(d, d), PyTorch init."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    d = x.shape[-1]
    for j in range(2):
      if j:
        x = nn.relu(x)
      x = nn.Dense(d, kernel_init=modules.torch_kernel_init,
                   bias_init=modules.torch_bias_init(d), name=f'linear{j}')(x)
    return x


@register_method('sskd', family='contrastive', paper='Xu et al. 2020, Knowledge Distillation Meets '
                 'Self-Supervision')
def build_sskd(info: BuildInfo, *, weight: float = 1.0, phase: str = 'distill',
               kd_weight: float = 0.9, tf_weight: float = 2.7, ss_weight: float = 10.0,
               kd_temperature: float = 4.0, tf_temperature: float = 4.0,
               ss_temperature: float = 0.5, ratio_tf: float = 1.0, ratio_ss: float = 0.75,
               student_feature: str | None = None, teacher_feature: str | None = None) -> Term:
  """SSKD: KD on normal and rotated images plus rotation self-supervision transfer (2 phases)."""
  if phase not in ('distill', 'teacher_ss'):
    raise ValueError(f"sskd: phase must be 'distill' or 'teacher_ss', got {phase!r}.")
  checks.positive('sskd', kd_temperature=kd_temperature, tf_temperature=tf_temperature,
                  ss_temperature=ss_temperature)
  checks.nonneg('sskd', weight=weight, kd_weight=kd_weight, tf_weight=tf_weight,
                ss_weight=ss_weight)
  for name, r in (('ratio_tf', ratio_tf), ('ratio_ss', ratio_ss)):
    if not (isinstance(r, (int, float)) and 0.0 <= r <= 1.0):
      raise ValueError(f'sskd: {name} (share of wrongly ranked rotated samples kept) must lie '
                       f'in [0, 1], got {r!r}.')
  checks.check_logits(info)
  ks, kt = checks.one_embedding(info, 'sskd', student_feature, teacher_feature)
  for who, k in (('student', ks), ('teacher', kt)):
    if len(checks.shape(info, who, k)) != 2:
      raise ValueError(f'sskd: the SS module reads a flat [N, d] {who} feature; {k!r} has shape '
                       f'{checks.shape(info, who, k)} (use the pooled feature).')
  head = SSHead()
  hp = dict(kd_temperature=kd_temperature, tf_temperature=tf_temperature,
            ss_temperature=ss_temperature, ratio_tf=ratio_tf, ratio_ss=ratio_ss)

  def init(rng, ctx: Context):
    return modules.init_modules(rng, {'student_head': (head, ctx.student[ks]),
                                      'teacher_head': (head, ctx.teacher[kt])})

  def loss(aux, ctx: Context):
    n = ctx.labels.shape[0]
    x4 = rotations(ctx.images)
    valid = None if ctx.mask is None else ctx.mask > 0
    # Passes on 3N / 4N rows: BN (if in train mode) over the valid images' copies.
    kw3 = {} if valid is None else {'mask': jnp.tile(valid, 3)}
    kw4 = {} if valid is None else {'mask': jnp.tile(valid, 4)}
    # The frozen teacher in eval mode: its normal rows are the main pass's features.
    t_logits_aug, t_feats_aug = jax.lax.stop_gradient(ctx.apply_teacher(x4[n:], **kw3))
    t_logits = jnp.concatenate([ctx.teacher['logits'], t_logits_aug], 0)
    t_feat = jnp.concatenate([ctx.teacher[kt], t_feats_aug[kt]], 0)
    # Official `bb_grad=False`/`no_grad`: the teacher backbone feature is detached.
    t_emb = modules.apply_module(head, aux, 'teacher_head', jax.lax.stop_gradient(t_feat),
                                 ctx.train, {})
    if phase == 'teacher_ss':
      value, acc = teacher_ss_loss(t_emb, n, valid)
      return value, {'ss_acc': acc}, {}
    s_logits, s_feats = ctx.apply_student(x4, **kw4)
    s_emb = modules.apply_module(head, aux, 'student_head', s_feats[ks], ctx.train, {})
    parts = sskd_losses(s_logits, t_logits, s_emb, t_emb, ctx.labels, valid=valid, **hp)
    value = kd_weight * parts['kd'] + tf_weight * parts['tf'] + ss_weight * parts['ss']
    return value, parts, {}

  # The teacher phase trains only the teacher head on frozen features: student in eval mode.
  needs = Needs(images=True, teacher_pass=True, student_pass=(phase == 'distill'),
                student_eval=(phase == 'teacher_ss'))
  return Term(name='sskd', method='sskd', weight=float(weight), loss=loss, init=init, needs=needs,
              masked=True)
