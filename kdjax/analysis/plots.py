"""Figures for `kdjax analyze`: each writes `<name>.png` and `<name>.pdf` (matplotlib, Agg)."""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np


def _plt():
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  return plt


def save(fig, out_dir: str, name: str) -> list[str]:
  """Writes the figure as PNG (150 dpi) and PDF; returns the two paths."""
  os.makedirs(out_dir, exist_ok=True)
  paths = [os.path.join(out_dir, f'{name}.{ext}') for ext in ('png', 'pdf')]
  for p in paths:
    fig.savefig(p, dpi=150, bbox_inches='tight')
  _plt().close(fig)
  return paths


def heatmap(matrix, row_labels, col_labels, *, title: str, xlabel: str, ylabel: str,
            fmt: str = '{:.2f}', vmin=None, vmax=None, cmap: str = 'viridis'):
  """An annotated heatmap (values written in every cell)."""
  plt = _plt()
  m = np.asarray(matrix, np.float64)
  fig, ax = plt.subplots(figsize=(1.0 + 0.7 * m.shape[1], 1.0 + 0.55 * m.shape[0]))
  im = ax.imshow(m, cmap=cmap, vmin=vmin, vmax=vmax)
  ax.set_xticks(range(m.shape[1]), col_labels, rotation=45, ha='right', fontsize=7)
  ax.set_yticks(range(m.shape[0]), row_labels, fontsize=7)
  lo, hi = np.nanmin(m) if np.isfinite(m).any() else 0, np.nanmax(m) if np.isfinite(m).any() else 1
  for i in range(m.shape[0]):
    for j in range(m.shape[1]):
      if np.isfinite(m[i, j]):
        light = (m[i, j] - (vmin if vmin is not None else lo)) / max((vmax if vmax is not None else hi)
                                                                      - (vmin if vmin is not None else lo), 1e-12)
        ax.text(j, i, fmt.format(m[i, j]), ha='center', va='center', fontsize=6,
                color='black' if light > 0.5 else 'white')
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.set_title(title, fontsize=9)
  fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
  return fig


def lines(series: dict, *, xlabel: str, ylabel: str, title: str, band: dict | None = None,
          styles: dict | None = None, logy: bool = False):
  """One line per entry of series {label: (x, y)}; optional +- band {label: std}."""
  plt = _plt()
  fig, ax = plt.subplots(figsize=(5, 3.5))
  for label, (x, y) in series.items():
    y = np.asarray([np.nan if v is None else v for v in y], np.float64)
    kw = (styles or {}).get(label, {})
    (ln,) = ax.plot(x, y, label=label, **kw)
    if band and label in band:
      s = np.asarray(band[label])
      ax.fill_between(x, y - s, y + s, alpha=0.2, color=ln.get_color())
  if logy:
    ax.set_yscale('log')
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.set_title(title, fontsize=9)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=6)
  return fig


def bars(values: dict, *, ylabel: str, title: str):
  """Grouped bars: values {group: {series: value}}."""
  plt = _plt()
  groups = list(values)
  series = sorted({s for g in values.values() for s in g})
  fig, ax = plt.subplots(figsize=(1.5 + 0.9 * len(groups), 3.5))
  w = 0.8 / max(len(series), 1)
  for k, s in enumerate(series):
    ax.bar(np.arange(len(groups)) + k * w, [values[g].get(s, np.nan) for g in groups], w, label=s)
  ax.set_xticks(np.arange(len(groups)) + 0.4 - w / 2, groups, rotation=30, ha='right', fontsize=7)
  ax.set_ylabel(ylabel)
  ax.set_title(title, fontsize=9)
  ax.legend(fontsize=6)
  return fig


def scatter_panels(points: dict, labels, *, title: str, share: bool = False):
  """One 2-D scatter panel per entry {name: [N, 2]}, coloured by class label; share: same axes."""
  plt = _plt()
  n = len(points)
  fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.4), squeeze=False, sharex=share, sharey=share,
                           layout='constrained')  # room for the suptitle above two-line titles
  for ax, (name, p) in zip(axes[0], points.items()):
    ax.scatter(p[:, 0], p[:, 1], c=labels, cmap='tab10' if np.max(labels) < 10 else 'tab20', s=3)
    ax.set_title(name, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
  fig.suptitle(title, fontsize=9)
  return fig


def image_grid(images, maps: dict, *, title: str):
  """Rows: images; columns: the image then one signed relevance map per entry {name: [N, H, W]}."""
  plt = _plt()
  n, cols = len(images), 1 + len(maps)
  fig, axes = plt.subplots(n, cols, figsize=(1.6 * cols, 1.6 * n), squeeze=False)
  for i in range(n):
    img = images[i]
    axes[i, 0].imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap='gray' if img.shape[-1] == 1 else None)
    for j, (name, m) in enumerate(maps.items(), 1):
      lim = np.abs(m[i]).max() + 1e-12
      axes[i, j].imshow(m[i], cmap='bwr', vmin=-lim, vmax=lim)
      if i == 0:
        axes[i, j].set_title(name, fontsize=6)
    for ax in axes[i]:
      ax.set_xticks([])
      ax.set_yticks([])
  fig.suptitle(title, fontsize=9)
  return fig


def reliability_diagrams(rels: dict):
  """One reliability diagram per run {label: reliability dict}: accuracy vs confidence per bin."""
  plt = _plt()
  n = len(rels)
  fig, axes = plt.subplots(1, n, figsize=(3 * n, 3), squeeze=False)
  for ax, (label, r) in zip(axes[0], rels.items()):
    e = np.asarray(r['edges'])
    acc = np.nan_to_num(np.asarray(r['accuracy'], np.float64))
    ax.bar(e[:-1], acc, width=np.diff(e), align='edge', edgecolor='k', linewidth=0.3, label='accuracy')
    ax.plot([0, 1], [0, 1], 'r--', linewidth=0.8)
    ax.set_title(f'{label}\nECE {r["ece"]:.4f}', fontsize=7)
    ax.set_xlabel('confidence')
    ax.set_ylabel('accuracy')
  return fig


def image_check(path: str) -> tuple[int, int]:
  """(height, width) of a written PNG, decoded with matplotlib; raises if unreadable."""
  img = _plt().imread(path)
  return img.shape[0], img.shape[1]


def labels_short(labels: Sequence[str]) -> list[str]:
  return [l if len(l) <= 28 else l[:12] + '..' + l[-14:] for l in labels]
