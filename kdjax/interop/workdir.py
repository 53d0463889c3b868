"""A kdjax workdir from given weights (`kdjax import-torch`), and the weights of a workdir.

Synopsis:
  cfg = config_for(arch, dataset)              the dataset's teacher recipe for arch
  write_workdir(workdir, cfg, variables, dataset=ds)   config.json + checkpoints/ + results.json
  read_student(workdir) -> (cfg, variables)    params + batch_stats of the newest checkpoint

The workdir has the layout `kdjax train` writes: `config.json` (the dataset's
teacher recipe for `arch`), `checkpoints/<step>/` (orbax; the full train state:
step, student params, batch_stats, empty aux, and the recipe's optimizer state,
saved at the recipe's last step, so `kdjax eval`, `kdjax export` and
`teacher.checkpoint` treat it like a finished run) and `results.json` (the test
accuracy when the dataset is on disk; otherwise `final` is null and `note` says why).
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from kdjax import config as config_lib
from kdjax import data as data_lib
from kdjax.train import checkpoint as ckpt_lib

# Training-set sizes of the TFDS datasets, so the optimizer state and the final
# step of an imported run can be built without the data on disk.
_NUM_TRAIN = {'cifar10': 50000, 'cifar100': 50000, 'stl10': 5000, 'imagenet2012': 1281167}


def config_for(arch: str, dataset: str) -> config_lib.ConfigDict:
  """The dataset's teacher recipe for `arch` (base config when it has none)."""
  recipes = config_lib.import_module('common')  # configs/common.py: the shared recipes
  if dataset in recipes.RECIPES:
    return recipes.teacher(dataset, arch)
  cfg = config_lib.base_config()
  cfg.data.name = dataset
  cfg.model.name = arch
  return cfg


def _shape_only_dataset(cfg, num_classes: int):
  """A Dataset with sizes but no data: enough to build the state, not to evaluate."""
  name = cfg.data.name
  if name not in _NUM_TRAIN:
    raise ValueError(f'dataset {name!r} is not on disk and its size is unknown; '
                     'prepare it first (see the README).')
  from kdjax.data import registry  # pylint: disable=g-import-not-at-top
  spec = registry.get(name)
  size = int(cfg.data.image_size) or spec.default_image_size
  shape = spec.image_shape if spec.image_shape and not spec.resizable else (size, size, 3)
  mean, std = spec.mean, spec.std
  return data_lib.Dataset(name=name, num_classes=num_classes, image_shape=tuple(shape), mean=mean,
                          std=std, num_train=_NUM_TRAIN[name], train_images=None, train_labels=None,
                          test_images=None, test_labels=None, clean_train_labels=None,
                          train_stream=None, test_stream=None, in_memory=False)


def load_dataset(cfg) -> tuple[Any, str]:
  """(dataset or None, why not)."""
  try:
    return data_lib.load(cfg.data), ''
  except (FileNotFoundError, ValueError, ImportError) as e:
    return None, f'{type(e).__name__}: {str(e)[:300]}'


def check_empty(workdir: str) -> None:
  """Raises FileExistsError when `workdir` already holds a run's checkpoints."""
  ckpt_dir = os.path.join(workdir, 'checkpoints')
  if os.path.isdir(ckpt_dir) and os.listdir(ckpt_dir):
    raise FileExistsError(f'{ckpt_dir} already holds checkpoints; pick an empty --workdir.')


def write_workdir(workdir: str, cfg, variables: Mapping, *, dataset=None, note: str = '',
                  info: Mapping | None = None) -> dict[str, Any]:
  """Writes `variables` of `cfg.model.name` as a finished kdjax run in `workdir`.

  Args:
    workdir: the directory (must not hold checkpoints yet).
    cfg: the run's config (`config_for`).
    variables: {'params', 'batch_stats'} of the architecture.
    dataset: the loaded dataset, to evaluate on its test split; None when absent.
    note: why there is no dataset (written to results.json).
    info: extra fields for results.json (e.g. the source file).

  Returns:
    The results dict written to results.json.
  """
  from kdjax.train import loop, setup as setup_lib  # pylint: disable=g-import-not-at-top
  check_empty(workdir)
  ckpt_dir = os.path.join(workdir, 'checkpoints')
  num_classes = int(np.shape(variables['params']['head']['bias'])[0])
  ds = dataset if dataset is not None else _shape_only_dataset(cfg, num_classes)
  setup = setup_lib.build(cfg, dataset=ds, teacher=None, read_init_from=False)
  fresh = setup_lib.init_variables(setup)
  got = jax.tree.map(np.shape, {'params': dict(variables['params']),
                                'batch_stats': dict(variables.get('batch_stats', {}))})
  want = jax.tree.map(np.shape, {'params': fresh['params']['student'],
                                 'batch_stats': fresh['batch_stats']})
  if got != want:
    raise ValueError(f'the weights do not match {cfg.model.name} on {cfg.data.name}.')
  fresh['params'] = {**fresh['params'], 'student': jax.tree.map(jnp.asarray, variables['params'])}
  fresh['batch_stats'] = jax.tree.map(jnp.asarray, variables.get('batch_stats', {}))
  fresh['step'] = jnp.asarray(setup.total_steps, jnp.int32)
  state = loop.fresh_state(setup, fresh)
  results: dict[str, Any] = {'model': cfg.model.name, 'dataset': cfg.data.name, 'teacher': None,
                             'imported': True, **dict(info or {}),
                             'hash': ckpt_lib.tree_hash({'params': fresh['params']['student'],
                                                         'batch_stats': fresh['batch_stats']})}
  if dataset is not None:
    res = loop.Evaluator(setup)(state, final=True)
    results.update(final=res, best={'top1': res['top1'], 'top5': res.get('top5'), 'epoch': None})
  else:
    results.update(final=None, note=f'not evaluated: dataset {cfg.data.name!r} is not on this '
                                    f'machine ({note}). Run `kdjax eval --workdir {workdir}` '
                                    'once it is prepared.')
  os.makedirs(workdir, exist_ok=True)
  ckpt = ckpt_lib.Checkpointer(ckpt_dir, keep=cfg.keep_checkpoints, asynchronous=False)
  ckpt.save(setup.total_steps, state)
  ckpt.close()
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    f.write(config_lib.to_json(cfg))
  with open(os.path.join(workdir, 'results.json'), 'w') as f:
    json.dump(results, f, indent=2, default=float)
  return results


def read_student(workdir: str) -> tuple[Any, dict]:
  """(config, {'params', 'batch_stats'}) of the newest readable checkpoint of a workdir."""
  cfg_path = os.path.join(workdir, 'config.json')
  if not os.path.exists(cfg_path):
    raise FileNotFoundError(f'{workdir!r} is not a kdjax workdir (no config.json).')
  cfg = config_lib.from_json(cfg_path)
  _, state = ckpt_lib.restore_exported(os.path.join(workdir, 'checkpoints'))
  variables = {'params': state['params']['student'], 'batch_stats': state.get('batch_stats', {})}
  return cfg, jax.tree.map(np.asarray, variables)


__all__ = ['check_empty', 'config_for', 'load_dataset', 'read_student', 'write_workdir']
