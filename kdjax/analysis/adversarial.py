"""Adversarial examples and their transferability between models.

Synopsis:
  x_adv = pgd(logits_fn, x, y, eps=0.031, step=0.003, iters=20)
  x_adv = fgsm(logits_fn, x, y, eps=0.031)
  res = transfer_matrix(nets, x, y, attack='pgd')   # res['success'][source][target]

"KD beyond model compression" (Sarfraz et al.), Sec. IV-D and Figure 1: PGD
(Madry et al. 2018) with eps = 0.031, step eta = 0.003, K = 20 iterations in
pixel space [0, 1] (the normalisation is inside the model call), generated on
each source model and evaluated on every target, only on the test images both
classify correctly; the value is the attack's success rate on the target
(the fraction of those adversarial images the target misclassifies).
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax


def _loss(logits_fn, x, y):
  return optax.softmax_cross_entropy_with_integer_labels(logits_fn(x), y).sum()


def pgd(logits_fn: Callable, x, y, *, eps: float = 0.031, step: float = 0.003, iters: int = 20,
        key=None):
  """L-infinity PGD (Madry et al. 2018) in pixel space.

  x_0 = x (or x + U(-eps, eps) when `key` is given, Madry's random start);
  x_{t+1} = clip_[0,1]( clip_[x-eps, x+eps]( x_t + step * sign(grad_x CE(f(x_t), y)) ) ).
  The per-example losses are summed, so each image follows its own gradient.

  Args:
    logits_fn: pixel images [N,H,W,C] in [0, 1] -> logits [N,K] (pure).
    x: clean images in [0, 1]; y: int labels [N].
    eps, step, iters: radius, step size and number of iterations.
    key: optional PRNG key for the random start.

  Returns:
    Adversarial images, within the eps-ball of x and within [0, 1].
  """
  lo, hi = jnp.maximum(x - eps, 0.0), jnp.minimum(x + eps, 1.0)
  x0 = x if key is None else jnp.clip(x + jax.random.uniform(key, x.shape, x.dtype, -eps, eps), lo, hi)
  grad = jax.grad(lambda xa: _loss(logits_fn, xa, y))

  def body(_, xa):
    return jnp.clip(xa + step * jnp.sign(grad(xa)), lo, hi)
  return jax.lax.fori_loop(0, iters, body, x0)


def fgsm(logits_fn: Callable, x, y, *, eps: float = 0.031):
  """FGSM (Goodfellow et al. 2015): clip_[0,1](x + eps * sign(grad_x CE(f(x), y))) = one PGD step of size eps."""
  return pgd(logits_fn, x, y, eps=eps, step=eps, iters=1)


def transfer_matrix(nets: Sequence, x: np.ndarray, y: np.ndarray, *, attack: str = 'pgd',
                    eps: float = 0.031, step: float = 0.003, iters: int = 20,
                    batch_size: int = 500) -> dict:
  """Success rates of attacks generated on each source and evaluated on each target.

  success[s][t] = |{i in C_s ∩ C_t : argmax f_t(x_adv_s,i) != y_i}| / |C_s ∩ C_t|,
  C_m = test images model m classifies correctly (Sarfraz et al. Sec. IV-D).
  The diagonal is the white-box success rate.

  Args:
    nets: callables x01 -> (logits, features) with `label` and `variables`
      attributes (`runs.Net`).
    x, y: pixel images in [0, 1] and labels.
    attack: 'pgd' or 'fgsm'.

  Returns:
    {'labels', 'success' [S][T], 'count' [S][T] (size of C_s ∩ C_t), 'clean_top1' [M], ...}.
  """
  if attack not in ('pgd', 'fgsm'):
    raise ValueError(f"attack must be 'pgd' or 'fgsm', got {attack!r}.")
  if not 0 < eps <= 1:
    raise ValueError(f'eps is a pixel-space radius in (0, 1], got {eps}.')
  n, num = len(nets), len(x)
  # Every jitted call sees one shape (chunks of `bs`, the last one zero-padded) and each
  # target classifies all adversarial images once; selecting C_s ∩ C_t afterwards keeps
  # the compile count at two per net instead of one per (source, target) subset size.
  bs = max(1, min(batch_size, num))
  xp, yp = _pad(np.asarray(x), bs), _pad(np.asarray(y), bs)
  clean = np.stack([_predict(net, xp, bs)[:num] == y for net in nets])  # [M, N]
  success = np.full((n, n), np.nan)
  count = np.zeros((n, n), np.int64)
  for s, src in enumerate(nets):
    make = _attack_fn(src, attack, eps, step, iters)
    adv = np.concatenate([np.asarray(make(src.variables, xp[i:i + bs], yp[i:i + bs]))
                          for i in range(0, len(xp), bs)])
    for t, tgt in enumerate(nets):
      both = clean[s] & clean[t]
      count[s, t] = int(both.sum())
      if count[s, t]:
        fooled = _predict(tgt, adv, bs)[:num][both] != y[both]
        success[s, t] = float(fooled.mean())
  return {'labels': [net.label for net in nets], 'attack': attack, 'eps': eps,
          'step': step if attack == 'pgd' else eps, 'iters': iters if attack == 'pgd' else 1,
          'num_images': int(len(x)), 'clean_top1': clean.mean(1).tolist(),
          'success': success.tolist(), 'count': count.tolist()}


def _pad(a, bs):
  """`a` with zero rows appended up to a multiple of `bs` (the extra rows are discarded)."""
  r = (-len(a)) % bs
  return a if not r else np.concatenate([a, np.zeros((r,) + a.shape[1:], a.dtype)])


def _predict(net, x, batch_size):
  return np.concatenate([np.asarray(net(x[i:i + batch_size])[0]).argmax(-1)
                         for i in range(0, len(x), batch_size)])


def _attack_fn(net, attack, eps, step, iters):
  def make(variables, xb, yb):
    fn = net.logits_fn(variables)
    if attack == 'fgsm':
      return fgsm(fn, xb, yb, eps=eps)
    return pgd(fn, xb, yb, eps=eps, step=step, iters=iters)
  return jax.jit(make)
