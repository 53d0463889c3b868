"""Loss sensitivity: active neurons, sharpness of the minimum, robustness to input noise.

Synopsis:
  g = feature_loss_grads(net, x, y, stage)          # dCE/dh at the output of stage k
  n, eig = active_neurons(g, threshold=0.05)         # Cui et al. 2019
  sharpness(loss_fn, params, scales, draws, key)     # IE-KD Figure 4(c)
  input_noise(logits_fn, x, y, sigmas, key)          # accuracy / loss vs Gaussian sigma
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax


def ce_sum(logits, y):
  return optax.softmax_cross_entropy_with_integer_labels(logits, y).sum()


def feature_loss_grads(net, x, y, stage: int, variables=None):
  """Per-example gradients g_i = d c(h_i) / d h_i of the CE loss w.r.t. the output h of stage k.

  c(h) = CE(forward_from(h, k), y) runs the rest of the network on h (eval-mode BN,
  so examples are independent and the gradient of the summed loss is the
  per-example gradient). Returns [N, H*W*C] (the map flattened: every unit is
  one neuron, as Cui et al. treat a convolutional layer).
  """
  if not hasattr(net.model, 'forward_from'):
    raise ValueError(f'{net.arch} has no forward_from; active neurons are available for the '
                     'CIFAR ResNets (resnet*, resnet*_cifar) and WRNs.')
  if getattr(net, 'survival', None) is not None:
    raise ValueError(f'{net.label}: active neurons of a stochastic-depth network are not '
                     'available: forward_from runs the rest of the network without the survival '
                     'scaling of the deployed network.')
  v = net.variables if variables is None else variables

  @jax.jit
  def grads(v, xb, yb):
    h = net.apply(v, xb)[1][f'stage{stage}']
    g = jax.grad(lambda h: ce_sum(net.model.apply(v, h, stage, method='forward_from'), yb))(h)
    return g
  return grads(v, x, y)


@jax.jit
def gradient_covariance_eigenvalues(g):
  """Eigenvalues (descending) of C = (1/N) sum_i g_i g_i^T, via the smaller of G^T G / N and G G^T / N."""
  g = g.reshape(g.shape[0], -1).astype(jnp.float32)
  n, d = g.shape
  m = (g.T @ g) if d <= n else (g @ g.T)
  return jnp.linalg.eigvalsh(m / n)[::-1]


def active_neurons(g, threshold: float = 0.05):
  """Number of active neurons (Cui et al. 2019, "Active subspace of neural networks"), as IE-KD Sec. 4.7 uses it.

  C = E[grad_h c(h) grad_h c(h)^T] (Monte Carlo over the examples), eigenvalues
  lambda_1 >= ... >= lambda_D; the number of active neurons is the smallest r with
  sum_{i<=r} lambda_i >= (1 - threshold) * sum_i lambda_i (Cui et al. use threshold 0.05):
  the number of directions of h the loss is sensitive to.

  Args:
    g: per-example gradients [N, D] (e.g. `feature_loss_grads`), or a channel
      subset of them (IE-KD's inheritance / exploration parts).
    threshold: the fraction of the gradient energy left outside the active subspace.

  Returns:
    (r, eigenvalues as a numpy array).
  """
  if not 0.0 <= threshold < 1.0:
    raise ValueError(f'threshold must be in [0, 1), got {threshold}.')
  eig = np.maximum(np.asarray(gradient_covariance_eigenvalues(jnp.asarray(g)), np.float64), 0.0)
  total = eig.sum()
  if total <= 0:
    return 0, eig
  r = int(np.searchsorted(np.cumsum(eig), (1.0 - threshold) * total - 1e-12 * total) + 1)
  return min(r, len(eig)), eig


def _filter_normalize(d, w):
  """Li et al. 2018 filter normalisation: d_f <- d_f * ||w_f|| / ||d_f|| per output filter (last axis)."""
  if w.ndim <= 1:
    return d * 0.0  # Li et al.: biases and BN parameters are not perturbed
  axes = tuple(range(w.ndim - 1))
  norm = lambda a: jnp.sqrt(jnp.sum(a * a, axis=axes, keepdims=True))
  return d * norm(w) / (norm(d) + 1e-10)


def sharpness(loss_fn: Callable, params, scales: Sequence[float], draws: int = 5, *, key=None,
              filter_normalized: bool = False) -> dict:
  """Loss after Gaussian noise on the parameters: L(theta + s * d), d ~ N(0, I), several draws per scale.

  IE-KD (Huang et al. 2021) Figure 4(c), following Keskar et al. 2017 and DML
  (Zhang et al. 2018): "the scale of Gaussian noise added to model parameters",
  i.e. isotropic noise of standard deviation s on every parameter, NOT
  filter-normalised (the default here). `filter_normalized=True` rescales each
  filter's noise to the filter's norm (Li et al. 2018) and leaves 1-D params.

  Args:
    loss_fn: params -> mean training loss (pure; BN statistics held fixed).
    params: the trained parameters.
    scales: noise scales s (0 gives the clean loss exactly).
    draws: noise draws per scale.

  Returns:
    {'scales', 'mean', 'std', 'losses' [S][draws], 'filter_normalized'}.
  """
  key = jax.random.key(0) if key is None else key
  leaves, treedef = jax.tree.flatten(params)

  @jax.jit
  def noisy_loss(params, k, s):
    ks = jax.random.split(k, len(leaves))
    ls = jax.tree.leaves(params)
    ds = [jax.random.normal(kk, w.shape, w.dtype) for kk, w in zip(ks, ls)]
    if filter_normalized:
      ds = [_filter_normalize(d, w) for d, w in zip(ds, ls)]
    return loss_fn(jax.tree.unflatten(treedef, [w + s * d for w, d in zip(ls, ds)]))

  losses = [[float(noisy_loss(params, jax.random.fold_in(key, j), float(s))) for j in range(draws)]
            for s in scales]
  arr = np.asarray(losses)
  return {'scales': [float(s) for s in scales], 'mean': arr.mean(1).tolist(),
          'std': arr.std(1).tolist(), 'losses': losses, 'filter_normalized': filter_normalized}


def input_noise(logits_fn: Callable, x, y, sigmas: Sequence[float], *, key=None,
                batch_size: int = 500) -> dict:
  """Accuracy and CE of f(clip_[0,1](x + sigma * n)), n ~ N(0, I) in pixel space, per sigma."""
  key = jax.random.key(0) if key is None else key

  @jax.jit
  def stats(xb, yb, k, s):
    xn = jnp.clip(xb + s * jax.random.normal(k, xb.shape, xb.dtype), 0.0, 1.0)
    logits = logits_fn(xn)
    return (logits.argmax(-1) == yb).sum(), ce_sum(logits, yb)

  acc, loss = [], []
  for i, s in enumerate(sigmas):
    c = l = 0.0
    for b in range(0, len(x), batch_size):
      cb, lb = stats(x[b:b + batch_size], y[b:b + batch_size],
                     jax.random.fold_in(jax.random.fold_in(key, i), b), float(s))
      c, l = c + float(cb), l + float(lb)
    acc.append(c / len(x))
    loss.append(l / len(x))
  return {'sigmas': [float(s) for s in sigmas], 'top1': acc, 'loss': loss}
