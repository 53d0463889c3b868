"""`kdjax import-torch` and `kdjax export --format torch`.

Synopsis:
  import_torch(arch, checkpoint, dataset, workdir, num_classes=None, prefix='', trust=False)
  export_torch(workdir, output)

An imported network is a finished kdjax run: any distillation config can name
its workdir as `teacher.checkpoint`. An exported state_dict loads with
`strict=True` into the PyTorch reference definition of the same architecture
(RepDistiller / torchvision / mdistiller names; see `mapping`).
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import numpy as np

from kdjax import data as data_lib
from kdjax.interop import mapping, torch_io, workdir as workdir_lib

# Class counts of the datasets kdjax knows without reading them.
_CLASSES = {'digits': 10, 'cifar10': 10, 'cifar100': 100, 'stl10': 10, 'imagenet2012': 1000}
# Input shapes (only the channel count shapes any weight; imagenet2012 uses data.image_size).
_IMAGE_SHAPES = {'digits': (8, 8, 1), 'cifar10': (32, 32, 3), 'cifar100': (32, 32, 3),
                 'stl10': (96, 96, 3)}


def _sha256(path: str) -> str:
  h = hashlib.sha256()
  with open(path, 'rb') as f:
    for chunk in iter(lambda: f.read(1 << 20), b''):
      h.update(chunk)
  return h.hexdigest()


def import_torch(arch: str, checkpoint: str, dataset: str, workdir: str, *,
                 num_classes: int | None = None, prefix: str = '',
                 trust: bool = False) -> dict[str, Any]:
  """Converts a PyTorch checkpoint of `arch` into a kdjax workdir; returns results.json's dict.

  Raises:
    FileNotFoundError: no checkpoint file.
    ValueError: unknown arch / dataset, no state_dict in the file, or (ImportMismatch) a
      state_dict that does not fit `arch` with the dataset's classes. Nothing is written.
  """
  mapping.family(arch)  # unsupported architecture: before reading anything
  if dataset not in data_lib.KNOWN:
    raise ValueError(f'unknown dataset {dataset!r}; known: {", ".join(data_lib.KNOWN)}.')
  workdir_lib.check_empty(workdir)
  if not os.path.isfile(checkpoint):
    raise FileNotFoundError(f'no checkpoint file {checkpoint!r}.')
  cfg = workdir_lib.config_for(arch, dataset)
  ds, why = None, ''
  if dataset not in _CLASSES:  # class count and image shape unknown: read the data first
    ds, why = workdir_lib.load_dataset(cfg)
  known = ds.num_classes if ds is not None else _CLASSES.get(dataset)
  if num_classes is None:
    if known is None:
      raise ValueError(f'dataset {dataset!r} could not be read ({why}); pass --num_classes.')
    num_classes = known
  elif known is not None and num_classes != known:
    raise ValueError(f'--num_classes {num_classes} but {dataset} has {known} classes: a teacher '
                     f'must predict the classes of the dataset it distils on.')
  if ds is not None:
    image_shape = tuple(ds.image_shape)
  elif dataset == 'imagenet2012':
    image_shape = (int(cfg.data.image_size),) * 2 + (3,)
  else:
    image_shape = _IMAGE_SHAPES.get(dataset, (32, 32, 3))
  # The checkpoint is checked before the (possibly large) dataset is read.
  sd = torch_io.load_state_dict(checkpoint, prefix=prefix, trust=trust)
  variables = torch_io.to_variables(arch, sd, num_classes, image_shape)
  if ds is None:
    ds, why = workdir_lib.load_dataset(cfg)
  info = {'source': os.path.abspath(checkpoint), 'source_sha256': _sha256(checkpoint),
          'source_tensors': len(sd)}
  return workdir_lib.write_workdir(workdir, cfg, variables, dataset=ds, note=why, info=info)


def export_torch(workdir: str, output: str) -> dict[str, Any]:
  """Writes a workdir's student as a PyTorch state_dict (+ `output.json` sidecar)."""
  cfg, variables = workdir_lib.read_student(workdir)
  if cfg.model.cohort:
    raise ValueError('a cohort (online distillation) has no single PyTorch reference; export '
                     'it with the default flax format.')
  arch = cfg.model.name
  sd = torch_io.to_state_dict(arch, variables)
  torch_io.save_state_dict(sd, output)
  meta = {'model': arch, 'format': 'torch', 'family': mapping.family(arch),
          'num_classes': int(np.shape(variables['params']['head']['bias'])[0]),
          'dataset': cfg.data.name, 'source': os.path.abspath(workdir), 'tensors': len(sd)}
  with open(output + '.json', 'w') as f:
    json.dump(meta, f, indent=2)
  return meta
