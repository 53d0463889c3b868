"""Trained networks of finished (or interrupted) workdirs, as pixel-space functions.

Synopsis:
  nets, dataset = runs.load(workdir)        # one Net per network in the run
  logits, feats = nets[0](images01)         # images in [0, 1]; normalised inside
  runs.load_many(workdirs)                  # the teacher of a run is not added:
                                            # pass the teacher's workdir too

A run with `model.cohort` (DML, IE-DML) gives one Net per member, labelled
'<run>/member<i>'. Every analysis works on images in pixel space [0, 1], so
attacks and noise are measured in the units the papers use; the dataset's
mean / std normalisation happens inside `Net.__call__`.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from kdjax.distill import hyperparameters
from kdjax.distill.methods import ie_kd as ie_lib

_IE_METHODS = ('ie_kd', 'ie_ft', 'ie_at', 'ie_od', 'ie_dml')


@dataclasses.dataclass
class IESplit:
  """An IE-KD run's channel split of feature `feature`: inheritance = perm[:n_inh]."""
  feature: str
  perm: np.ndarray
  n_inh: int

  def parts(self, f):
    """(inheritance, exploration) channel halves of an NHWC map (the run's own split)."""
    return ie_lib.channel_split(f, jnp.asarray(self.perm), self.n_inh)


@dataclasses.dataclass(eq=False)
class Net:
  """One trained network: `net(x01) -> (logits, features)`, jitted.

  Attributes:
    label: display name ('<workdir basename>' or '<basename>/member<i>').
    arch: model name for `kdjax.models.create`.
    model: the flax module (a plain model, never a cohort).
    variables: {'params', 'batch_stats'}.
    mean, std: per-channel normalisation of x01.
    ie: the IE-KD channel split of this network, or None.
    survival: per-block stochastic-depth survival probabilities p_l of a run
      trained with stochastic depth (Self-Guidance, stochastic_depth), else None.
      The deployed network is then the expected one (branch l scaled by p_l), as
      `kdjax eval` evaluates it, and every analysis sees that network.
    num_blocks: residual blocks of the model (`model.spec().num_blocks`; 0: none).
  """
  label: str
  arch: str
  model: Any
  variables: Any
  mean: np.ndarray
  std: np.ndarray
  workdir: str = ''
  ie: IESplit | None = None
  survival: np.ndarray | None = None
  num_blocks: int = 0

  def __post_init__(self):
    self._fn = jax.jit(self.apply)

  def normalize(self, x01):
    return (x01 - jnp.asarray(self.mean, jnp.float32)) / jnp.asarray(self.std, jnp.float32)

  def apply(self, variables, x01, branch_scale=None):
    """Pure: (logits, features) of pixel-space images in eval mode.

    branch_scale: per-block residual-branch scales [num_blocks] (a sub-network
    mask, `kdjax.analysis.masks`); None: the deployed network (the survival
    probabilities with stochastic depth, else no scaling).
    """
    if branch_scale is None and self.survival is not None:
      branch_scale = self.survival
    kw = {} if branch_scale is None else {'branch_scale': jnp.asarray(branch_scale, jnp.float32)}
    return self.model.apply(variables, self.normalize(x01), train=False, **kw)

  def logits_fn(self, variables=None):
    """x01 -> logits, closing over `variables` (default: the trained ones)."""
    v = self.variables if variables is None else variables
    return lambda x01: self.apply(v, x01)[0]

  def __call__(self, x01):
    return self._fn(self.variables, x01)


def _ie_splits(cfg, state) -> dict[int, IESplit]:
  """Member index -> IE split, from the run's IE terms and their stored permutations."""
  out = {}
  from kdjax import config as config_lib
  for st in config_lib.stages(cfg):
    for name, spec in st.distill.terms.items():
      spec = dict(spec)
      method = spec.get('method', name)
      if method not in _IE_METHODS or name not in state.get('aux_state', {}):
        continue
      hp = {**hyperparameters(method), **spec}
      perm = np.asarray(state['aux_state'][name]['ie_split']['perm'])
      member = int(hp.get('member', 0)) if method == 'ie_dml' else 0
      n_inh = ie_lib.num_inherit(len(perm), float(hp.get('inherit_ratio', 0.5)))
      out[member] = IESplit(str(hp.get('student_feature', 'last_map')), perm, n_inh)
  return out


def load(workdir: str):
  """(list of Net, dataset) of the newest readable checkpoint in `workdir`.

  Raises:
    FileNotFoundError: not a kdjax workdir, or no readable checkpoint.
  """
  from kdjax import models
  from kdjax.train import export
  cfg, setup, _, state = export.restore_workdir(workdir)  # the restore `kdjax eval` uses
  ds = setup.dataset
  state = jax.device_get(state)
  params, stats = state['params']['student'], state['batch_stats']
  label = os.path.basename(os.path.normpath(workdir))
  splits = _ie_splits(cfg, state)
  kwargs = dict(cfg.model.kwargs) if cfg.model.kwargs else {}
  mean, std = np.asarray(ds.mean, np.float32), np.asarray(ds.std, np.float32)
  if cfg.model.cohort:
    nets = []
    for i, arch in enumerate(cfg.model.cohort):
      key = f'member{i}'
      v = {'params': params[key], 'batch_stats': stats.get(key, {})}
      m = models.create(arch, ds.num_classes, **kwargs)
      nets.append(Net(f'{label}/{key}', arch, m, v, mean, std, workdir, splits.get(i),
                      num_blocks=int(m.spec().num_blocks)))
    return nets, ds
  v = {'params': params, 'batch_stats': stats}
  survival = None if setup.survival is None else np.asarray(setup.survival, np.float32)
  return [Net(label, cfg.model.name, setup.student, v, mean, std, workdir, splits.get(0), survival,
              int(setup.student.spec().num_blocks))], ds


def load_many(workdirs):
  """(nets of every workdir in order, the dataset); all runs must share the dataset."""
  nets, ds = [], None
  for w in workdirs:
    n, d = load(w)
    if ds is not None and (d.name, d.image_shape) != (ds.name, ds.image_shape):
      raise ValueError(f'{w} uses dataset {d.name!r} {d.image_shape}, the first run '
                       f'{ds.name!r} {ds.image_shape}; analyse runs of one dataset together.')
    nets += n
    ds = ds or d
  return nets, ds


def test_arrays(ds, limit: int | None = None):
  """(images in [0, 1] float32, int32 labels) of the test split, the first `limit`."""
  if not ds.in_memory:
    raise ValueError(f'{ds.name} is streamed; the analyses need an in-memory dataset '
                     '(digits, cifar10/100, stl10, folder, fer2013).')
  x, y = ds.test_images, ds.test_labels
  if limit:
    x, y = x[:limit], y[:limit]
  return x.astype(np.float32) / 255.0, np.asarray(y, np.int32)


def train_arrays(ds, limit: int | None = None):
  """(images in [0, 1], labels) of the (unaugmented) training split, the first `limit`."""
  x, y = ds.train_images, ds.train_labels
  if limit:
    x, y = x[:limit], y[:limit]
  return x.astype(np.float32) / 255.0, np.asarray(y, np.int32)


def batched(fn, *arrays, batch_size: int = 500):
  """Concatenated outputs (a pytree) of `fn(*chunks)` over leading-axis chunks."""
  outs = []
  n = len(arrays[0])
  for s in range(0, n, batch_size):
    outs.append(jax.device_get(fn(*(a[s:s + batch_size] for a in arrays))))
  return jax.tree.map(lambda *xs: np.concatenate(xs), *outs)
