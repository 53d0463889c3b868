"""Calibration figures' data: reliability diagram bins and the risk-coverage curve.

Synopsis:
  rel = reliability(logits, labels, num_bins=15)   # per-bin confidence, accuracy, count, ECE
  rc = risk_coverage(logits, labels)               # coverage, risk, AURC

The same conventions as the trainer's ECE and AURC (kdjax.train.metrics), which
IPWD (Niu et al. 2022) reports: equal-width bins (i/M, (i+1)/M] of the max
softmax probability (Guo et al. 2017); risk at coverage i/N is the error rate
of the i most confident predictions (Geifman et al. 2019); AURC is their mean.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


@jax.jit
def _conf_correct(logits, labels):
  p = jax.nn.softmax(logits.astype(jnp.float32), -1)
  return p.max(-1), (p.argmax(-1) == labels)


def reliability(logits, labels, num_bins: int = 15) -> dict:
  """Per bin b: mean confidence, accuracy, count; ECE = sum_b |B_b|/N |acc(B_b) - conf(B_b)|."""
  conf, correct = (np.asarray(a, np.float64) for a in _conf_correct(jnp.asarray(logits), jnp.asarray(labels)))
  edges = np.linspace(0.0, 1.0, num_bins + 1)
  # bin b holds conf in (edges[b], edges[b+1]]
  b = np.clip(np.searchsorted(edges, conf, side='left') - 1, 0, num_bins - 1)
  count = np.bincount(b, minlength=num_bins)
  safe = np.maximum(count, 1)
  acc = np.bincount(b, correct, num_bins) / safe
  mconf = np.bincount(b, conf, num_bins) / safe
  ece = float(np.sum(count / len(conf) * np.abs(acc - mconf)))
  nan = lambda a: np.where(count > 0, a, np.nan).tolist()
  return {'edges': edges.tolist(), 'confidence': nan(mconf), 'accuracy': nan(acc),
          'count': count.tolist(), 'ece': ece}


def risk_coverage(logits, labels) -> dict:
  """Coverage i/N and the error rate of the i most confident predictions; AURC = mean risk."""
  conf, correct = (np.asarray(a) for a in _conf_correct(jnp.asarray(logits), jnp.asarray(labels)))
  order = np.argsort(-conf, kind='stable')
  err = (~correct[order]).astype(np.float64)
  n = len(err)
  risk = np.cumsum(err) / np.arange(1, n + 1)
  return {'coverage': (np.arange(1, n + 1) / n).tolist(), 'risk': risk.tolist(),
          'aurc': float(risk.mean())}
