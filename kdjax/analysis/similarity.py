"""Representation similarity and clustering: CKA, feature distance, k-means NMI, t-SNE.

Synopsis:
  linear_cka(x, y); rbf_cka(x, y, sigma_frac=0.5)       x [N, D1], y [N, D2]
  cka_layers(feats_a, feats_b, kind='linear')            layer x layer matrix
  feature_distance(h_t, h_s)                             mean_i ||h_T,i - h_S,i||^2
  kmeans_nmi(h, labels, seed=0)                          NMI of k-means clusters
  tsne(h, seed=0)                                        2-D embedding
  tsne_joint([h1, h2, ...], seed=0)                      one embedding of several sets

CKA (Kornblith et al. 2019, "Similarity of neural network representations
revisited") is used by IE-KD (Huang et al. 2021, Figure 4(a), Table 6(a))
between the inheritance and exploration halves of a student. Feature distance
and NMI are SRRL's (Yang et al. 2021) Table 3; t-SNE its Figure 2 and
Self-Guidance's (Peng et al. 2021) Figure 5.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np


def _center(x):
  return x - jnp.mean(x, axis=0, keepdims=True)


@jax.jit
def linear_cka(x, y):
  """Linear CKA = ||Y_c^T X_c||_F^2 / (||X_c^T X_c||_F ||Y_c^T Y_c||_F), X_c = X - mean (Kornblith et al. eq. 5).

  Feature-space form: cost O(N D^2); use `cka_from_grams` when D >> N.
  """
  x, y = _center(x.reshape(x.shape[0], -1)), _center(y.reshape(y.shape[0], -1))
  num = jnp.sum((y.T @ x) ** 2)
  return num / (jnp.linalg.norm(x.T @ x) * jnp.linalg.norm(y.T @ y))


def gram_linear(x):
  """K = X X^T for features x [N, ...] (flattened)."""
  x = x.reshape(x.shape[0], -1)
  return x @ x.T


def gram_rbf(x, sigma_frac: float = 0.5):
  """K_ij = exp(-||x_i - x_j||^2 / (2 sigma^2)), sigma = sigma_frac * median_{i != j} ||x_i - x_j||.

  Kornblith et al. Sec. 6 use a fraction of the median distance (0.5 in their code).
  """
  x = x.reshape(x.shape[0], -1)
  sq = jnp.sum(x * x, 1)
  d2 = jnp.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0.0)
  n = x.shape[0]
  off = d2[np.triu_indices(n, 1)]
  sigma2 = (sigma_frac ** 2) * jnp.median(off)
  return jnp.exp(-d2 / (2 * sigma2))


def _hsic(k, l):
  """tr(K H L H) up to the 1/(n-1)^2 factor that cancels in CKA; H = I - 11^T/n."""
  kc = k - k.mean(0, keepdims=True) - k.mean(1, keepdims=True) + k.mean()
  lc = l - l.mean(0, keepdims=True) - l.mean(1, keepdims=True) + l.mean()
  return jnp.sum(kc * lc)


@jax.jit
def cka_from_grams(k, l):
  """CKA(K, L) = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) (Kornblith et al. eq. 4)."""
  return _hsic(k, l) / jnp.sqrt(_hsic(k, k) * _hsic(l, l))


@functools.partial(jax.jit, static_argnames=('sigma_frac',))
def rbf_cka(x, y, sigma_frac: float = 0.5):
  """RBF-kernel CKA with bandwidth sigma_frac * median pairwise distance (Kornblith et al. Sec. 6)."""
  return cka_from_grams(gram_rbf(x, sigma_frac), gram_rbf(y, sigma_frac))


def cka_layers(feats_a: dict, feats_b: dict, kind: str = 'linear', sigma_frac: float = 0.5):
  """Layer x layer CKA matrix [len(feats_a), len(feats_b)] (Gram form, O(N^2) per layer)."""
  if kind not in ('linear', 'rbf'):
    raise ValueError(f"CKA kind must be 'linear' or 'rbf', got {kind!r}.")
  gram = gram_linear if kind == 'linear' else functools.partial(gram_rbf, sigma_frac=sigma_frac)
  ga = [jax.jit(gram)(jnp.asarray(v)) for v in feats_a.values()]
  gb = [jax.jit(gram)(jnp.asarray(v)) for v in feats_b.values()]
  return np.array([[float(cka_from_grams(a, b)) for b in gb] for a in ga])


@jax.jit
def feature_distance(h_t, h_s):
  """mean_i ||h_T,i - h_S,i||^2 over examples (SRRL, Yang et al. 2021, Table 3)."""
  return jnp.mean(jnp.sum((h_t.reshape(h_t.shape[0], -1) - h_s.reshape(h_s.shape[0], -1)) ** 2, -1))


def kmeans_nmi(h, labels, num_clusters: int | None = None, seed: int = 0) -> float:
  """NMI(k-means clusters of h, labels), k = number of classes (SRRL Table 3; Manning et al. 2008).

  scikit-learn KMeans (10 restarts) and normalized_mutual_info_score (arithmetic mean normaliser).
  """
  from sklearn.cluster import KMeans
  from sklearn.metrics import normalized_mutual_info_score
  labels = np.asarray(labels)
  k = int(num_clusters or len(np.unique(labels)))
  h = np.asarray(h, np.float64).reshape(len(h), -1)
  assign = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(h)
  return float(normalized_mutual_info_score(labels, assign))


def nmi(labels_a, labels_b) -> float:
  """Normalized mutual information between two labelings (scikit-learn)."""
  from sklearn.metrics import normalized_mutual_info_score
  return float(normalized_mutual_info_score(np.asarray(labels_a), np.asarray(labels_b)))


def tsne(h, seed: int = 0, perplexity: float = 30.0) -> np.ndarray:
  """2-D t-SNE (van der Maaten & Hinton 2008; scikit-learn, PCA init) of features h [N, D]."""
  from sklearn.manifold import TSNE
  h = np.asarray(h, np.float64).reshape(len(h), -1)
  perplexity = min(perplexity, max(1.0, (len(h) - 1) / 3))
  return TSNE(n_components=2, perplexity=perplexity, init='pca', random_state=seed).fit_transform(h)


def tsne_joint(hs, seed: int = 0, perplexity: float = 30.0) -> list[np.ndarray]:
  """One t-SNE of the row-stacked feature sets hs[i] [N_i, D], split back into [N_i, 2] each.

  Every set lives in the same embedding, so positions are comparable across
  panels (separate `tsne` calls are each defined only up to rotation / scale).
  """
  hs = [np.asarray(h, np.float64).reshape(len(h), -1) for h in hs]
  dims = {h.shape[1] for h in hs}
  if len(dims) != 1:
    raise ValueError(f'a joint t-SNE needs features of one dimension, got {sorted(dims)}.')
  pts = tsne(np.concatenate(hs), seed, perplexity)
  return np.split(pts, np.cumsum([len(h) for h in hs])[:-1])
