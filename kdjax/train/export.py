"""A finished (or interrupted) run's workdir: re-evaluate it, export its student.

Synopsis:
  evaluate_workdir('runs/x')                  # -> metrics of the newest readable checkpoint
  export_student('runs/x', 'student.msgpack')  # the student alone + a JSON sidecar

The workdir stands alone: its config.json names the teacher by absolute path
(older workdirs: relative to the directory they were trained from, resolved
here), and the export records everything needed to rebuild and feed the
network.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax

from kdjax import config as config_lib
from kdjax.train import checkpoint as ckpt_lib
from kdjax.train import setup as setup_lib
from kdjax.train.loop import Evaluator, restore


def restore_workdir(workdir: str):
  """(cfg, setup, step, state) of a finished or interrupted run's newest checkpoint."""
  cfg_path = os.path.join(workdir, 'config.json')
  if not os.path.exists(cfg_path):
    raise FileNotFoundError(f'{workdir!r} is not a kdjax workdir (no config.json).')
  cfg = config_lib.from_json(cfg_path)
  from kdjax.train import multiseed
  multiseed.check_not_group(cfg, workdir)
  _find_teacher(cfg, workdir)
  setup = setup_lib.build(cfg, read_init_from=False)  # the run's own checkpoint follows
  ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, 'checkpoints'), keep=cfg.keep_checkpoints)
  restored = restore(setup, ckpt, setup_lib.init_variables(setup))
  ckpt.close()
  if restored is None:
    raise FileNotFoundError(f'no readable checkpoint in {workdir}/checkpoints.')
  return (cfg, setup) + tuple(restored)


def _find_teacher(cfg, workdir: str) -> None:
  """Points cfg.teacher.checkpoint at the teacher run, or says which paths were tried.

  New workdirs store it absolute; older ones relative to the directory they
  were trained from, so the workdir's parent folders are tried as well.
  """
  path = cfg.teacher.checkpoint
  if not path:
    return
  tried = [path] if os.path.isabs(path) else [os.path.abspath(path)]
  if not os.path.isabs(path):
    here = os.path.dirname(os.path.abspath(workdir))
    while True:
      tried.append(os.path.join(here, path))
      if os.path.dirname(here) == here:
        break
      here = os.path.dirname(here)
  for candidate in tried:
    if os.path.exists(os.path.join(candidate, 'config.json')):
      cfg.teacher.checkpoint = candidate
      return
  raise FileNotFoundError(
      f'the teacher of {workdir} (teacher.checkpoint={path!r} in its config.json) is not there; '
      f'tried {", ".join(dict.fromkeys(tried))}. Put the teacher run back, or edit that path in '
      f'{os.path.join(workdir, "config.json")}.')


def evaluate_workdir(workdir: str) -> dict[str, Any]:
  """Re-evaluates the newest readable checkpoint of a run; writes eval.json."""
  _, setup, step, state = restore_workdir(workdir)
  res = {'step': step, 'epoch': step / setup.steps_per_epoch, **Evaluator(setup)(state, final=True)}
  with open(os.path.join(workdir, 'eval.json'), 'w') as f:
    json.dump(res, f, indent=2)
  return res


def export_student(workdir: str, output: str) -> dict[str, Any]:
  """Writes the newest checkpoint's student (params + batch_stats) to `output`.

  Auxiliary modules (connectors, embeddings, memory banks) and the optimizer
  state are left out: the file is the deployable network. A JSON sidecar
  (`output + '.json'`) names the architecture and the source run.
  """
  from flax import serialization
  cfg, setup, step, state = restore_workdir(workdir)
  student = jax.device_get({'params': state['params']['student'], 'batch_stats': state['batch_stats']})
  with open(output, 'wb') as f:
    f.write(serialization.to_bytes(student))
  ds = setup.dataset
  meta = {'model': cfg.model.name, 'cohort': list(cfg.model.cohort),
          'model_kwargs': dict(cfg.model.kwargs), 'num_classes': ds.num_classes,
          # Inputs: uint8 NHWC images, x = (image / 255 - mean) / std per channel.
          'input': {'shape': list(ds.image_shape), 'layout': 'NHWC', 'pixels': 'uint8 0..255',
                    'normalize': '(image / 255 - mean) / std', 'mean': list(ds.mean),
                    'std': list(ds.std)},
          # Extra arguments of model.apply: the expected network under stochastic depth.
          'apply_kwargs': {'branch_scale': list(setup.survival)} if setup.survival else {},
          'dataset': cfg.data.name, 'step': int(step), 'source': os.path.abspath(workdir),
          'kdjax_version': _version(), 'hash': ckpt_lib.tree_hash(student)}
  with open(output + '.json', 'w') as f:
    json.dump(meta, f, indent=2)
  return meta


def _version() -> str:
  try:
    from importlib.metadata import version
    return version('kdjax')
  except Exception:  # not installed as a package (a source checkout)
    return 'unknown'
