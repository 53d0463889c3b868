"""Evaluation metrics (accuracy, calibration, selective risk) and metric writers.

All metrics are computed on the host from gathered logits with numpy, so they
are exact and independent of the device layout.
"""

from __future__ import annotations

import json
import os
import time
from typing import Mapping

import numpy as np


def log_softmax(logits: np.ndarray) -> np.ndarray:
  z = logits - logits.max(-1, keepdims=True)
  return z - np.log(np.exp(z).sum(-1, keepdims=True))


def topk_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
  k = min(k, logits.shape[-1])
  top = np.argsort(-logits, axis=-1)[:, :k]
  return float((top == labels[:, None]).any(-1).mean())


def expected_calibration_error(logits: np.ndarray, labels: np.ndarray, num_bins: int = 15) -> float:
  """ECE with equal-width confidence bins (Guo et al. 2017; 15 bins as IPWD reports).

  ECE = sum_b |B_b|/N * |acc(B_b) - conf(B_b)|, bins (i/M, (i+1)/M].
  """
  probs = np.exp(log_softmax(logits))
  conf = probs.max(-1)
  correct = (probs.argmax(-1) == labels).astype(np.float64)
  edges = np.linspace(0.0, 1.0, num_bins + 1)
  ece = 0.0
  for lo, hi in zip(edges[:-1], edges[1:]):
    in_bin = (conf > lo) & (conf <= hi)
    if in_bin.any():
      ece += in_bin.mean() * abs(correct[in_bin].mean() - conf[in_bin].mean())
  return float(ece)


def aurc(logits: np.ndarray, labels: np.ndarray) -> float:
  """Area under the risk-coverage curve (Geifman et al. 2019), confidence = max prob.

  Samples sorted by decreasing confidence; risk at coverage i/N is the error
  rate of the i most confident; AURC is the mean of those N risks.
  """
  probs = np.exp(log_softmax(logits))
  order = np.argsort(-probs.max(-1), kind='stable')
  errors = (probs.argmax(-1) != labels)[order].astype(np.float64)
  risks = np.cumsum(errors) / np.arange(1, len(errors) + 1)
  return float(risks.mean())


def classification_metrics(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
  nll = -log_softmax(logits)[np.arange(len(labels)), labels]
  return {'top1': topk_accuracy(logits, labels, 1), 'top5': topk_accuracy(logits, labels, 5),
          'loss': float(nll.mean())}


def agreement_metrics(student_logits: np.ndarray, teacher_logits: np.ndarray) -> dict[str, float]:
  """Student-teacher top-1 agreement and KL(p_t || p_s) at temperature 1."""
  ls, lt = log_softmax(student_logits), log_softmax(teacher_logits)
  kl = (np.exp(lt) * (lt - ls)).sum(-1).mean()
  agree = (student_logits.argmax(-1) == teacher_logits.argmax(-1)).mean()
  return {'teacher_agreement': float(agree), 'teacher_kl': float(kl)}


class MetricWriter:
  """JSON lines (`metrics.jsonl`) plus TensorBoard event files, process 0 only."""

  def __init__(self, workdir: str, enabled: bool = True):
    self.enabled = enabled
    self.path = os.path.join(workdir, 'metrics.jsonl')
    self._tb = None
    if enabled:
      try:
        from tensorboardX import SummaryWriter
        self._tb = SummaryWriter(os.path.join(workdir, 'tensorboard'))
      except ImportError:  # TensorBoard files are optional.
        self._tb = None

  def truncate_after(self, step: int) -> list[dict]:
    """On resume: drop records newer than the restored step, return the rest."""
    if not os.path.exists(self.path):
      return []
    with open(self.path) as f:
      records = [json.loads(line) for line in f if line.strip()]
    keep = [r for r in records if r['step'] <= step]
    if self.enabled:
      with open(self.path, 'w') as f:
        f.writelines(json.dumps(r) + '\n' for r in keep)
    return keep

  def write(self, step: int, kind: str, values: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    record = {'step': int(step), 'kind': kind, 'time': time.time(),
              **{k: float(v) for k, v in values.items()}}
    with open(self.path, 'a') as f:
      f.write(json.dumps(record) + '\n')
    if self._tb is not None:
      for k, v in values.items():
        self._tb.add_scalar(f'{kind}/{k}', float(v), int(step))

  def close(self):
    if self._tb is not None:
      self._tb.close()
