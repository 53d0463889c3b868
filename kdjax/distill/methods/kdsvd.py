"""KDSVD (Lee et al. 2018, Self-supervised Knowledge Distillation Using Singular Value
Decomposition; RepDistiller's `--distill kdsvd`, `distiller_zoo/KDSVD.py`).

Synopsis:
  dict(method='kdsvd', weight=1.0, k=1)     stage outputs (RD feat[1:-1]); ce_weight 1

Formula (RepDistiller `KDSVD.forward`). For each stage l, X_l [N, HW, C] is the
map flattened over space; its SVD X = U S V^T gives right singular vectors
V [N, C, r] (columns sorted by singular value).
  teacher: V_t = normalize_C(V[:, :, :k]),   s_t = normalize(S[:, :k])
  student: V_s = normalize_C(V[:, :, :k+3]), aligned to the teacher by
           V_s <- V_s M, M_ij = sign(cos_ij) if |cos_ij| = max_i |cos_ij| else 0,
           cos = V_s^T V_t   (picks, per teacher vector, the best student vector)
  both scaled by the teacher's s_t: V <- V * s_t
  G_l[c, c', j] = exp(-(V_l[c, j] - V_{l-1}[c', j])^2 / 8)   between consecutive stages
  L = sum_{l >= 2} sum_{n, c, c', j} (G^s_l - G^t_l)^2 / N   (non-finite entries -> 0)
Student and teacher stages must have equal channel counts (the RBF maps are
C_l x C_{l-1}), as in the reference.

Deviations (numerics only; see the tests):
  * the SVD's derivative drops the 1/(s_i^2 - s_j^2) terms of *equal* singular
    values (e.g. the many zero singular values of ReLU maps with dead
    channels), which are 0 * inf = NaN in the textbook formula and are
    multiplied by a zero cotangent anyway (only the top k+3 vectors are used);
  * each right singular vector's sign is fixed (largest-magnitude entry > 0),
    where the reference keeps the LAPACK/cuSOLVER sign; the student's sign is
    re-aligned to the teacher anyway, and a fixed sign makes the loss
    reproducible across backends.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from kdjax.distill.api import (BuildInfo, Context, Term, no_aux, register_method,
                               resolve_feature_pair)

Array = jax.Array


# ----------------------------------------------------------------------------
# Pure functions

def _t(x):
  return jnp.swapaxes(x, -1, -2)


@jax.custom_jvp
def svd_right(x: Array) -> tuple[Array, Array]:
  """Singular values s [.., r] and right singular vectors V [.., n, r] of x [.., m, n]."""
  _, s, vh = jnp.linalg.svd(x, full_matrices=False)
  return s, _t(vh)


@svd_right.defjvp
def _svd_right_jvp(primals, tangents):
  # The reduced-SVD derivative (as jax.lax.linalg's rule), with the
  # 1/(s_j^2 - s_i^2) factor set to 0 where the two singular values are equal.
  x, = primals
  dx, = tangents
  u, s, vh = jnp.linalg.svd(x, full_matrices=False)
  v = _t(vh)
  ds_mat = _t(u) @ dx @ v
  ds = jnp.diagonal(ds_mat, axis1=-2, axis2=-1)
  s_j, s_i = s[..., None, :], s[..., :, None]
  diff = (s_j + s_i) * (s_j - s_i)
  ok = jnp.abs(diff) > 1e-20
  f = jnp.where(ok, 1.0 / jnp.where(ok, diff, 1.0), 0.0)
  sds = s_i * ds_mat
  dv = v @ (f * (sds + _t(sds)))
  m, n = x.shape[-2:]
  if n > m:
    dxu = _t(dx) @ u
    pos = s > 0
    inv = jnp.where(pos, 1.0 / jnp.where(pos, s, 1.0), 0.0)
    dv = dv + (dxu - v @ (vh @ dxu)) * inv[..., None, :]
  return (s, v), (ds, dv)


def _finite(x):
  return jnp.where(jnp.isfinite(x), x, 0.0)


def _l2_normalize(x, axis):
  """torch F.normalize: x / max(|x|, 1e-12)."""
  return x / jnp.maximum(jnp.sqrt(jnp.sum(x * x, axis=axis, keepdims=True)), 1e-12)


def _fix_sign(v):
  """Flip each column of v [N, C, r] so that its largest-magnitude entry is positive."""
  idx = jnp.argmax(jnp.abs(v), axis=1, keepdims=True)
  sign = jnp.sign(jnp.take_along_axis(v, idx, axis=1))
  return v * jax.lax.stop_gradient(jnp.where(sign == 0, 1.0, sign))


def top_singular(feature: Array, n: int) -> tuple[Array, Array]:
  """RD `KDSVD.svd`: normalised top-n singular values [N, n] and right vectors [N, C, n].

  feature: NHWC [N, H, W, C], flattened to [N, HW, C] (RD's
  `view(N, C, H*W).transpose(-2, -1)` in NCHW).
  """
  b, h, w, c = feature.shape
  x = feature.reshape(b, h * w, c).astype(jnp.float32)
  s, v = svd_right(x)
  s, v = _finite(s), _finite(_fix_sign(v))
  return _l2_normalize(s[:, :n], 1), _l2_normalize(v[:, :, :n], 1)


def align_rsv(a: Array, b: Array) -> Array:
  """RD `align_rsv`: for each column of b, the signed column of a most parallel to it."""
  cosine = _t(a) @ b                                     # [N, r_a, r_b]
  best = jnp.max(jnp.abs(cosine), axis=1, keepdims=True)
  mask = jnp.where(best == jnp.abs(cosine), jnp.sign(cosine), 0.0)
  return a @ jax.lax.stop_gradient(mask)


def kdsvd_loss(student_features, teacher_features, *, k: int = 1,
               per_sample: bool = False) -> Array:
  """Sum over consecutive stage pairs of the RBF-relation distance (see module doc).

  Args:
    student_features: list of NHWC maps (at least 2).
    teacher_features: list of NHWC maps, same channel counts; no gradient.
    k: number of teacher singular vectors (the student uses k + 3).
    per_sample: return each sample's sum [N] (whose mean is the loss) instead.

  Returns:
    A scalar (or [N]).
  """
  if len(student_features) != len(teacher_features) or len(student_features) < 2:
    raise ValueError('kdsvd_loss: needs equally many (>= 2) student and teacher maps, got '
                     f'{len(student_features)} and {len(teacher_features)}.')
  total = jnp.zeros((), jnp.float32)
  prev_s = prev_t = None
  for i, (fs, ft) in enumerate(zip(student_features, teacher_features)):
    s_t, v_t = top_singular(jax.lax.stop_gradient(ft), k)
    _, v_s = top_singular(fs, k + 3)
    v_s = align_rsv(v_s, v_t)
    scale = s_t[:, None, :]
    v_t, v_s = v_t * scale, v_s * scale
    if i > 0:
      g_s = jnp.exp(-(v_s[:, :, None, :] - prev_s[:, None, :, :]) ** 2 / 8)
      g_t = jnp.exp(-(v_t[:, :, None, :] - prev_t[:, None, :, :]) ** 2 / 8)
      sq = _finite((g_s - jax.lax.stop_gradient(g_t)) ** 2)
      total = total + (jnp.sum(sq.reshape(sq.shape[0], -1), axis=1) if per_sample
                       else jnp.sum(sq))
    prev_s, prev_t = v_s, v_t
  return total if per_sample else total / student_features[0].shape[0]


# ----------------------------------------------------------------------------
# Registration

@register_method('kdsvd', family='features', paper='Lee et al. 2018, Self-supervised Knowledge '
                 'Distillation Using Singular Value Decomposition')
def build_kdsvd(info: BuildInfo, *, weight: float = 1.0, k: int = 1, student_features=None,
                teacher_features=None) -> Term:
  """RBF relations of singular vectors between consecutive stages (RD feat[1:-1], k = 1)."""
  s_keys, t_keys = resolve_feature_pair(info, 'kdsvd', student_features, teacher_features,
                                        lambda: info.stages('student'),
                                        lambda: info.stages('teacher'))
  if not (isinstance(k, int) and k >= 1):
    raise ValueError(f'kdsvd: k must be an integer >= 1, got {k!r}.')
  if len(s_keys) < 2:
    raise ValueError(f'kdsvd: relates consecutive maps, so it needs >= 2 features, got '
                     f'{list(s_keys)}.')
  for ks, kt in zip(s_keys, t_keys):
    s, t = tuple(info.feature('student', ks).shape), tuple(info.feature('teacher', kt).shape)
    if len(s) != 4 or len(t) != 4:
      raise ValueError(f'kdsvd: needs NHWC maps, got student {ks!r} {s} and teacher {kt!r} {t}.')
    if s[-1] != t[-1]:
      raise ValueError(f'kdsvd: student {ks!r} has {s[-1]} channels but teacher {kt!r} has '
                       f'{t[-1]}; the relation maps need equal channel counts.')

  def loss(ctx: Context):
    return kdsvd_loss([ctx.student[k_] for k_ in s_keys], [ctx.teacher[k_] for k_ in t_keys],
                      k=k)

  def per_sample(ctx: Context):
    return kdsvd_loss([ctx.student[k_] for k_ in s_keys], [ctx.teacher[k_] for k_ in t_keys],
                      k=k, per_sample=True)
  return Term(name='kdsvd', method='kdsvd', weight=float(weight), loss=no_aux(loss),
              per_sample=no_aux(per_sample))
