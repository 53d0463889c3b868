"""SRRL (seed 003): feature matching + softmax regression through the teacher's classifier.

Synopsis:
  h = connector(student_last_map)                      # 1x1 conv + BN + ReLU (C_s -> C_t)
  v_s = mean_hw(h); v_t = teacher 'pooled'
  l_fm = feature_matching(v_s, v_t)
  z_sc = teacher_head(v_s, kernel_t, bias_t)           # frozen teacher FC
  l_sr = softmax_regression(z_sc, teacher_logits, labels, kind='mse')
  loss = alpha * l_fm + beta * l_sr

Sources: seed 003 eqs. (3), (4), (7), (8) and Table 9; official code
jingyang2017/KD_SRRL and jingyang2017/SRD_ossl (`transfer_conv`, MSE with
mean reduction for both terms).
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import optax

from kdjax.losses.logits import kd

Array = jax.Array

SR_KINDS = ('mse', 'ce', 'kl')


def feature_matching(student_vec: Array, teacher_vec: Array) -> Array:
  """L_FM = mean over N*C_t of (v_s - v_t)^2 (official code; the paper sums over HW)."""
  chex.assert_rank([student_vec, teacher_vec], 2)
  chex.assert_equal_shape([student_vec, teacher_vec])
  d = student_vec.astype(jnp.float32) - jax.lax.stop_gradient(teacher_vec).astype(jnp.float32)
  return jnp.mean(d * d)


def teacher_head(vec: Array, kernel: Array, bias: Array | None) -> Array:
  """z = vec @ W_T + b_T with the teacher's classifier frozen (stop_gradient on W_T, b_T).

  Gradients flow into `vec` (the connector and the student), never into W_T, b_T.
  """
  chex.assert_rank([vec, kernel], 2)
  z = vec.astype(jnp.float32) @ jax.lax.stop_gradient(kernel).astype(jnp.float32)
  if bias is not None:
    z = z + jax.lax.stop_gradient(bias).astype(jnp.float32)
  return z


def softmax_regression(z_sc: Array, teacher_logits: Array, labels: Array | None = None, *,
                       kind: str = 'mse', temperature: float = 4.0) -> Array:
  """L_SR on the student's features classified by the teacher's head.

  'mse': mean over N*K of (z_sc - z_t)^2 (eq. 7, official, best in Table 9);
  'ce':  CE(z_sc, y) (eq. 4);
  'kl':  tau^2 KL(p_t^tau || p_sc^tau) (Table 9's KL variant).
  """
  chex.assert_rank([z_sc, teacher_logits], 2)
  chex.assert_equal_shape([z_sc, teacher_logits])
  zt = jax.lax.stop_gradient(teacher_logits).astype(jnp.float32)
  if kind == 'mse':
    return jnp.mean(jnp.square(z_sc.astype(jnp.float32) - zt))
  if kind == 'ce':
    if labels is None:
      raise ValueError("softmax_regression(kind='ce') needs labels.")
    return optax.softmax_cross_entropy_with_integer_labels(z_sc.astype(jnp.float32), labels).mean()
  if kind == 'kl':
    return kd(z_sc, zt, temperature=temperature)
  raise ValueError(f'unknown SRRL L_SR kind {kind!r}; known: {SR_KINDS}.')


def adain(x: Array, y: Array, eps: float = 1e-5) -> Array:
  """AdaIN (Huang & Belongie 2017): sigma(y) (x - mu(x)) / sigma(x) + mu(y).

  Per sample and channel over H, W of NHWC maps; sigma = sqrt(biased variance + eps)
  (the same eps under both square roots). x and y must agree in N and C; their H, W may
  differ. Gradients flow into x and y (stop y yourself if it is a frozen target).
  """
  chex.assert_rank([x, y], 4)
  if x.shape[0] != y.shape[0] or x.shape[-1] != y.shape[-1]:
    raise ValueError(f'adain: x {x.shape} and y {y.shape} must agree in batch and channels.')
  x = x.astype(jnp.float32)
  y = y.astype(jnp.float32)
  mu_x = jnp.mean(x, axis=(1, 2), keepdims=True)
  mu_y = jnp.mean(y, axis=(1, 2), keepdims=True)
  sd_x = jnp.sqrt(jnp.var(x, axis=(1, 2), keepdims=True) + eps)
  sd_y = jnp.sqrt(jnp.var(y, axis=(1, 2), keepdims=True) + eps)
  return sd_y * (x - mu_x) / sd_x + mu_y
