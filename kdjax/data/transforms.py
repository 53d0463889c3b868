"""Seeded corruptions of a training split: symmetric label noise and power-law class imbalance.

Synopsis:
  labels = symmetric_label_noise(labels, sigma=0.4, num_classes=10, seed=0)
  counts = imbalance_counts(10, gamma=1.0, n_max=5000, n_min=250)
  keep = power_law_imbalance(labels, gamma=1.0, n_max=5000, n_min=250, seed=0)
  images, labels = images[keep], labels[keep]

Both follow Sarfraz et al. ("Knowledge Distillation Beyond Model
Compression", sections IV-B and IV-C), which takes both protocols from
Hendrycks et al. 2019 ("Using pre-training can improve model robustness and
uncertainty", its ref. [28]). `kdjax.data.load` applies them to the training
split only; the test split is never touched. Everything here is host-side
numpy and deterministic given the seed.
"""

from __future__ import annotations

import numpy as np


def symmetric_label_noise(labels: np.ndarray, sigma: float, num_classes: int, seed: int, *,
                          include_true: bool = True) -> np.ndarray:
  """Symmetric (uniform) label noise at rate `sigma`.

  Exactly `round(sigma * N)` samples, chosen uniformly without replacement by
  `seed`, are corrupted; the rest keep their label.

  Convention. Seed 002 corrupts "the true label with a given probability
  (noise rate sigma) to a randomly chosen class sampled from a uniform
  distribution on the number of classes", citing Hendrycks et al. [28], whose
  code mixes the identity with the uniform matrix over *all* K classes. So by
  default (`include_true=True`) a corrupted sample's new label is uniform over
  all K classes, the true one included: about sigma*(K-1)/K of the labels end up
  wrong. `include_true=False` draws from the K-1 *other* classes instead (the
  "symmetric flipping" convention of many later papers): then exactly
  round(sigma*N) labels change. The same seed picks the same samples in both
  conventions.

  Args:
    labels: int array [N], values in [0, num_classes).
    sigma: corruption rate in [0, 1].
    num_classes: K.
    seed: picks the samples and their new labels.
    include_true: whether the new label may equal the true one (see above).

  Returns:
    A new int32 array [N]; `labels` is not modified.
  """
  labels = np.asarray(labels)
  if labels.ndim != 1:
    raise ValueError(f'labels must be 1-D, got shape {labels.shape}')
  if not 0.0 <= sigma <= 1.0:
    raise ValueError(f'label noise rate sigma must be in [0, 1], got {sigma}')
  if num_classes < 2:
    raise ValueError(f'label noise needs at least 2 classes, got {num_classes}')
  out = labels.astype(np.int32).copy()
  n = len(out)
  num_noisy = int(round(sigma * n))
  if num_noisy == 0:
    return out
  rng = np.random.default_rng([seed, 0x5EED002])
  which = rng.choice(n, size=num_noisy, replace=False)
  if include_true:
    out[which] = rng.integers(0, num_classes, size=num_noisy)
  else:
    # An offset in 1..K-1 added mod K is uniform over the other K-1 classes.
    offset = rng.integers(1, num_classes, size=num_noisy)
    out[which] = (out[which] + offset) % num_classes
  return out


def imbalance_counts(num_classes: int, gamma: float, n_max: int = 5000,
                     n_min: int = 250) -> np.ndarray:
  """Per-class sample counts of the power-law imbalance of "KD beyond model compression", class 0 largest.

  Seed 002 (after Dong et al. and Hendrycks et al.) writes

      n_c = floor(a / (b + (c - 1)^(-gamma)))

  with a, b set so that the largest and smallest class have n_max and n_min
  samples. Taken literally for c = 1..K the c = 1 term is 0^(-gamma) = inf, so
  n_1 = 0 for any finite a, b: the formula only makes sense for c - 1 >= 1.
  kdjax therefore evaluates it on r = c - 1 = 1..K (i.e. c = 2..K+1), which is
  the form that is finite everywhere:

      m_r = floor(a / (b + r^(-gamma))),  r = 1..K.

  With a > 0 and b + r^(-gamma) > 0 this is increasing in r, so the ends are
  m_1 = a / (b + 1) = n_min and m_K = a / (b + K^(-gamma)) = n_max, giving

      b = (n_min - n_max * K^(-gamma)) / (n_max - n_min),   a = n_min * (b + 1).

  (b + K^(-gamma) = n_min (1 - K^(-gamma)) / (n_max - n_min) > 0, so every
  denominator is positive.) This orientation matches the paper's remarks: a
  smaller gamma gives a heavier tail ("becomes a power law class distribution
  as gamma decreases", fewer samples overall, lower teacher accuracy in its
  Table II), while a large gamma leaves all but one class near n_max. The
  counts are returned sorted largest first, so class 0 gets n_max and class
  K-1 gets n_min: counts[k] = m_{K-k}. Example (K=10, gamma=1, 5000/250):
  b = -1/19, a = 4500/19 and counts[8] = m_2 = floor(9000/17) = 529.

  Args:
    num_classes: K >= 2.
    gamma: imbalance exponent > 0.
    n_max, n_min: size of the largest and smallest class, n_max >= n_min >= 1.

  Returns:
    int64 array [K], non-increasing, counts[0] == n_max, counts[-1] == n_min.
  """
  if num_classes < 2:
    raise ValueError(f'imbalance needs at least 2 classes, got {num_classes}')
  if gamma <= 0:
    raise ValueError(f'imbalance gamma must be > 0, got {gamma}')
  if not n_max >= n_min >= 1:
    raise ValueError(f'need n_max >= n_min >= 1, got n_max={n_max}, n_min={n_min}')
  if n_max == n_min:
    return np.full(num_classes, n_max, np.int64)
  k = num_classes
  b = (n_min - n_max * k ** (-gamma)) / (n_max - n_min)
  a = n_min * (b + 1.0)
  r = np.arange(1, k + 1, dtype=np.float64)
  m = a / (b + r ** (-gamma))
  # The ends are exact in real arithmetic; a tiny tolerance keeps floor() from
  # turning 249.99999999 into 249.
  m = np.floor(m + 1e-7).astype(np.int64)
  m[0], m[-1] = n_min, n_max
  return m[::-1].copy()


def power_law_imbalance(labels: np.ndarray, gamma: float, n_max: int = 5000, n_min: int = 250,
                        seed: int = 0, *, num_classes: int | None = None) -> np.ndarray:
  """Indices of a power-law-imbalanced subset of a (balanced) training split.

  Class c keeps the first `imbalance_counts(...)[c]` of its samples after a
  seeded shuffle (all of them if it has fewer). Which classes are large is
  fixed: class 0 is the largest, class K-1 the smallest.

  Args:
    labels: int array [N].
    gamma, n_max, n_min: see `imbalance_counts`.
    seed: shuffles the samples within each class.
    num_classes: K; defaults to labels.max() + 1.

  Returns:
    Sorted int64 indices into `labels`.
  """
  labels = np.asarray(labels)
  k = int(num_classes if num_classes is not None else labels.max() + 1)
  counts = imbalance_counts(k, gamma, n_max, n_min)
  rng = np.random.default_rng([seed, 0x1BA1A])
  order = rng.permutation(len(labels))
  keep = []
  for c in range(k):
    members = order[labels[order] == c]
    keep.append(members[:counts[c]])
  return np.sort(np.concatenate(keep))


def apply_to_train(labels: np.ndarray, num_classes: int, *, label_noise: float = 0.0,
                   imbalance_gamma: float = 0.0, imbalance_max: int = 5000,
                   imbalance_min: int = 250, seed: int = 0,
                   noise_include_true: bool = True) -> tuple[np.ndarray, np.ndarray]:
  """Imbalance first (on clean labels), then label noise on what is kept.

  Returns:
    (keep, noisy_labels): `keep` indexes the original split; `noisy_labels`
    has len(keep) entries (equal to labels[keep] when label_noise == 0).
  """
  keep = np.arange(len(labels))
  if imbalance_gamma and imbalance_gamma > 0:
    keep = power_law_imbalance(labels, imbalance_gamma, imbalance_max, imbalance_min, seed,
                               num_classes=num_classes)
  kept = np.asarray(labels)[keep].astype(np.int32)
  if label_noise and label_noise > 0:
    kept = symmetric_label_noise(kept, label_noise, num_classes, seed,
                                 include_true=noise_include_true)
  return keep, kept

