"""The float64 BatchNorm reference the BatchNorm tests compare against."""

import numpy as np


def numpy_bn_train(x, scale, bias, run_mean, run_var, *, unbiased, momentum=0.1, eps=1e-5):
  """PyTorch BatchNorm2d in train mode, float64: output and updated running stats.

  y = (x - mu) / sqrt(v + eps) * gamma + beta with the biased batch variance v;
  running_mean <- (1 - m) running_mean + m mu; running_var <- (1 - m) running_var
  + m v n / (n - 1) (PyTorch), or + m v (flax's convention) when not unbiased.
  """
  x = np.asarray(x, np.float64)
  axes = tuple(range(x.ndim - 1))
  n = int(np.prod([x.shape[a] for a in axes]))
  mu = x.mean(axes)
  v = ((x - mu) ** 2).mean(axes)
  y = (x - mu) / np.sqrt(v + eps) * scale + bias
  upd = v * n / (n - 1) if unbiased else v
  return y, (1 - momentum) * run_mean + momentum * mu, (1 - momentum) * run_var + momentum * upd
