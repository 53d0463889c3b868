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
  """JSON lines (`metrics.jsonl`) plus TensorBoard event files, process 0 only.

  `metrics.jsonl` is the record; the event files are derived from it. On
  resume they are rewritten from the kept records, so each step appears once
  with the full history, whatever a killed process left behind.
  """

  def __init__(self, workdir: str, enabled: bool = True):
    self.enabled = enabled
    self.path = os.path.join(workdir, 'metrics.jsonl')
    self.tb_dir = os.path.join(workdir, 'tensorboard')
    self._tb = None
    self._tb_cls = None
    if enabled:
      try:
        from tensorboardX import SummaryWriter
        self._tb_cls = SummaryWriter
      except ImportError:  # TensorBoard files are optional.
        pass

  def _open_tb(self, clear: bool) -> None:
    if self._tb_cls is None:
      return
    if self._tb is not None:
      self._tb.close()
    if clear and os.path.isdir(self.tb_dir):
      for name in os.listdir(self.tb_dir):
        if name.startswith('events.out.tfevents'):
          os.remove(os.path.join(self.tb_dir, name))  # derived from metrics.jsonl
    self._tb = self._tb_cls(self.tb_dir)

  def truncate_after(self, step: int) -> list[dict]:
    """On (re)start: drop records newer than the restored step, return the rest.

    The TensorBoard files are rewritten from the kept records.
    """
    keep = []
    if os.path.exists(self.path):
      with open(self.path) as f:
        for line in f:
          try:
            record = json.loads(line)
          except ValueError:  # a line cut short by a kill
            continue
          if record.get('step', step + 1) <= step:
            keep.append(record)
    if self.enabled:
      tmp = self.path + '.tmp'
      with open(tmp, 'w') as f:
        f.writelines(json.dumps(r) + '\n' for r in keep)
      os.replace(tmp, self.path)
      self._open_tb(clear=True)
      for r in keep:
        self._tb_write(r['step'], r['kind'], r, r.get('time'))
    return keep

  def _tb_write(self, step, kind, values, walltime=None):
    if self._tb is None:
      return
    for k, v in values.items():
      if k in ('step', 'kind', 'time') or isinstance(v, bool) or not isinstance(v, (int, float)):
        continue
      self._tb.add_scalar(f'{kind}/{k}', float(v), int(step), walltime=walltime)

  def write(self, step: int, kind: str, values: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    if self._tb is None and self._tb_cls is not None:
      self._open_tb(clear=False)
    record = {'step': int(step), 'kind': kind, 'time': time.time(),
              **{k: float(v) for k, v in values.items()}}
    with open(self.path, 'a') as f:
      f.write(json.dumps(record) + '\n')
    self._tb_write(step, kind, values, record['time'])

  def close(self):
    if self._tb is not None:
      self._tb.close()
      self._tb = None
