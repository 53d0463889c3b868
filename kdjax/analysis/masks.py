"""Sub-networks of a stochastic-depth network (Self-Guidance, Peng et al. 2021): masks and features.

Synopsis:
  masks = parse_masks('full,expected,random:3,drop:4,1101', num_blocks=4,
                      survival=net.survival, seed=0)       # [(name, float32 [L]), ...]
  logits, feats = masked_outputs(net, x01, [m for _, m in masks])  # [M, N, K], [M, N, D]
  res, panels = subnetwork_tsne(net, x01, labels, masks, num_classes)  # Fig. 5 panels

A residual network with L blocks computes, in block l,
  x_l = relu(shortcut(x_{l-1}) + s_l * f_l(x_{l-1}))
(`model.apply(..., branch_scale=s)`, kdjax/models/common.py). Self-Guidance's
students are the sub-networks of stochastic depth (Huang et al. 2016): s_l = b_l
in {0, 1}, b_l ~ Bernoulli(p_l) with p_l = 1 - (l / L)(1 - p_L) (the paper's
eq. 3); its teacher, the deployed network, is the expected network s_l = p_l
(eq. 4). Figure 5 of the paper shows t-SNE of the penultimate features of the
teacher and of students written as 0/1 strings ('1': block active).

Mask syntax (comma-separated; each token gives one or more masks):
  full       every branch kept, unscaled (s_l = 1): the network without stochastic depth
  expected   s_l = p_l, the deployed network (eq. 4; `kdjax eval` evaluates this one)
  random:K   K sub-networks with b_l ~ Bernoulli(p_l), as training samples them (eq. 3)
  drop:K     one sub-network with exactly K blocks dropped, uniformly at random
             (like the paper's students A and B: same capacity, different blocks)
  1101...    an explicit mask of L digits 0/1, block 1 first (the paper's notation)
`expected` and `random:K` need the run's survival probabilities (a run with a
`self_guidance` or `stochastic_depth` term); the others work on any residual net.
Random draws use numpy's default_rng(seed), consumed token by token, so a spec and
a seed always give the same masks. Panel names: 'full', 'expected', 'random<i> <bits>',
'drop<K> <bits>' or the 0/1 string, with ' (2)', ' (3)', ... on repeats.
"""

from __future__ import annotations

import re
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

SYNTAX = ('full, expected, random:K, drop:K or a 0/1 string with one digit per residual block '
          '(block 1 first), comma-separated')


def bits(mask) -> str:
  """The paper's notation of a 0/1 mask: '1' active block, '0' skipped (block 1 first)."""
  return ''.join('1' if v else '0' for v in np.asarray(mask) > 0.5)


def parse_masks(spec: str, num_blocks: int, survival: Sequence[float] | None = None,
                seed: int = 0, arch: str = 'the model') -> list[tuple[str, np.ndarray]]:
  """[(panel name, float32 mask [num_blocks])] of a mask spec (syntax in the module docstring).

  Raises:
    ValueError: an unknown token, a 0/1 string of the wrong length, K out of
      range, `expected` / `random:K` without survival probabilities, a model
      without residual blocks, or an empty spec. The message says what to pass.
  """
  if num_blocks < 1:
    raise ValueError(f'{arch} has no residual blocks, so it has no stochastic-depth sub-networks; '
                     '--masks needs a ResNet or WRN run (resnet*, resnet*_cifar, wrn_*).')
  tokens = [t.strip() for t in str(spec).split(',') if t.strip()]
  if not tokens:
    raise ValueError(f'--masks is empty; give {SYNTAX}.')
  rng = np.random.default_rng(seed)
  p = None if survival is None else np.asarray(survival, np.float32)
  if p is not None and p.shape != (num_blocks,):
    raise ValueError(f'survival probabilities have shape {p.shape}, {arch} has {num_blocks} blocks.')

  def need_survival(tok):
    if p is None:
      raise ValueError(f'mask {tok!r} needs the stochastic-depth survival probabilities, but this '
                       'run was not trained with stochastic depth (no self_guidance or '
                       'stochastic_depth term); use full, drop:K or explicit 0/1 strings.')

  def count(tok, lo, hi):
    k = tok.split(':', 1)[1]
    if not re.fullmatch(r'\d+', k) or not lo <= int(k) <= hi:
      raise ValueError(f'mask {tok!r}: K must be an integer in {lo}..{hi} ({arch} has '
                       f'{num_blocks} residual blocks).')
    return int(k)

  out = []
  for tok in tokens:
    low = tok.lower()
    if low == 'full':
      out.append(('full', np.ones(num_blocks, np.float32)))
    elif low == 'expected':
      need_survival(tok)
      out.append(('expected', p.copy()))
    elif low.startswith('random:'):
      need_survival(tok)
      for _ in range(count(tok, 1, 10000)):
        m = (rng.random(num_blocks) < p).astype(np.float32)
        n_random = sum(name.startswith('random') for name, _ in out) + 1
        out.append((f'random{n_random} {bits(m)}', m))
    elif low.startswith('drop:'):
      k = count(tok, 0, num_blocks)
      m = np.ones(num_blocks, np.float32)
      m[rng.choice(num_blocks, size=k, replace=False)] = 0.0
      out.append((f'drop{k} {bits(m)}', m))
    elif re.fullmatch(r'[01]+', tok):
      if len(tok) != num_blocks:
        raise ValueError(f'mask {tok!r} has {len(tok)} digits but {arch} has {num_blocks} residual '
                         f'blocks; give one 0/1 digit per block (block 1 first).')
      out.append((tok, np.array([float(c) for c in tok], np.float32)))
    else:
      raise ValueError(f'unknown mask {tok!r}; --masks takes {SYNTAX}.')
  seen = {}
  for i, (name, m) in enumerate(out):  # names key the JSON and the panels: keep them unique
    seen[name] = seen.get(name, 0) + 1
    if seen[name] > 1:
      out[i] = (f'{name} ({seen[name]})', m)
  return out


def check_syntax(spec: str) -> None:
  """Raises ValueError on a token no model could accept (before any run is loaded)."""
  tokens = [t.strip() for t in str(spec).split(',') if t.strip()]
  if not tokens:
    raise ValueError(f'--masks is empty; give {SYNTAX}.')
  for tok in tokens:
    if not re.fullmatch(r'(?i)full|expected|(random|drop):\d+|[01]+', tok):
      raise ValueError(f'unknown mask {tok!r}; --masks takes {SYNTAX}.')


def masked_outputs(net, x01, masks: Sequence, batch_size: int = 500,
                   feature: str = 'pooled') -> tuple[np.ndarray, np.ndarray]:
  """(logits [M, N, K], features [M, N, D]) of each sub-network; D flattens `feature`.

  `feature` defaults to the penultimate 'pooled' vector (Self-Guidance Fig. 5).
  Eval mode (BatchNorm running statistics); the mask is a traced argument, so one
  compile serves every mask. masks[i] is the per-block branch scale s (see above).
  """
  m = np.stack([np.asarray(v, np.float32) for v in masks])
  if m.ndim != 2 or m.shape[1] != net.num_blocks:
    raise ValueError(f'masks have shape {m.shape}; {net.label} needs [M, {net.num_blocks}].')

  @jax.jit
  def fn(v, xb, s):
    logits, feats = net.apply(v, xb, branch_scale=s)
    return logits, feats[feature].reshape(xb.shape[0], -1)
  logits, feats = [], []
  for s in m:
    outs = [fn(net.variables, jnp.asarray(x01[i:i + batch_size]), jnp.asarray(s))
            for i in range(0, len(x01), batch_size)]
    logits.append(np.concatenate([np.asarray(o[0]) for o in outs]))
    feats.append(np.concatenate([np.asarray(o[1]) for o in outs]))
  return np.stack(logits), np.stack(feats)


def subnetwork_tsne(net, x01, labels, masks: Sequence, num_classes: int, *, seed: int = 0,
                    joint: bool = False, batch_size: int = 500) -> tuple[dict, dict]:
  """Self-Guidance Figure 5: t-SNE of each sub-network's penultimate features.

  Args:
    masks: [(name, mask)] from `parse_masks`.
    joint: one t-SNE of all sub-networks' features together (comparable panels);
      False: one t-SNE per sub-network (the paper does not say which it used; its
      panels have independent axes).

  Returns:
    ({name: {'branch_scale', 'active_blocks', 'top1', 'kmeans_nmi'}},
     {panel title: [N, 2] embedding}). top1 is on these images; kmeans_nmi the
    NMI of k-means (k = classes) clusters of the features against the labels
    (`similarity.kmeans_nmi`), a number for the paper's "more concentrated
    clusters" of the teacher.
  """
  from kdjax.analysis import similarity
  labels = np.asarray(labels)
  logits, feats = masked_outputs(net, x01, [m for _, m in masks], batch_size)
  emb = (similarity.tsne_joint(list(feats), seed) if joint
         else [similarity.tsne(f, seed) for f in feats])
  res, panels = {}, {}
  for (name, m), lg, f, e in zip(masks, logits, feats, emb):
    top1 = float((lg.argmax(-1) == labels).mean())
    nmi = similarity.kmeans_nmi(f, labels, num_classes, seed)
    res[name] = {'branch_scale': np.asarray(m).tolist(), 'active_blocks': float(np.sum(m)),
                 'top1': top1, 'kmeans_nmi': nmi}
    panels[f'{name}\ntop1 {top1:.3f}, NMI {nmi:.3f}'] = e
  return res, panels
