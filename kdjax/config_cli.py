"""`kdjax config list MODULE` / `kdjax config show MODULE:ARG`: the cells of the per-paper configs.

  kdjax config list                  every module and its number of cells
  kdjax config list rd_cifar100      every cell with its launch command
  kdjax config show rd_cifar100:method=crd,teacher=resnet32x4,student=resnet8x4 [--config.x=y ...]

A config module (configs/<name>.py) defines `get_config(arg)`, `cells()` (every
valid `arg`), `workdir(arg)` (where the cell's run writes; teachers are read from
their own cell's workdir) and `REJECTED` ({arg: reason} for cells that are listed
but fail when the run is set up, e.g. RepDistiller's FSP "N/A" pairs).
"""

from __future__ import annotations

import os

from kdjax import config as config_lib


def cells(module: str) -> list[str]:
  return list(config_lib.import_module(module).cells())


def rejected(module: str) -> dict[str, str]:
  return dict(getattr(config_lib.import_module(module), 'REJECTED', {}))


def all_cells() -> list[tuple[str, str]]:
  """(module, arg) for every cell of every module in configs/."""
  return [(m, a) for m in config_lib.list_modules() for a in cells(m)
          if hasattr(config_lib.import_module(m), 'cells')]


def _module_arg(module: str) -> str:
  """'configs/<name>.py' for the repository's modules (found from any cwd), else the path."""
  path = config_lib.config_path(module)
  rel = os.path.relpath(path, os.path.dirname(config_lib.CONFIGS_DIR))
  return rel if rel.startswith('configs' + os.sep) else path


def launch(module: str, arg: str) -> str:
  mod = config_lib.import_module(module)
  workdir = mod.workdir(arg) if hasattr(mod, 'workdir') else 'WORKDIR'
  return f'kdjax train --config {_module_arg(module)}:{arg} --workdir {workdir}'


def list_cells(module: str | None) -> int:
  if not module:
    total = 0
    for m in config_lib.list_modules():
      mod = config_lib.import_module(m)
      if hasattr(mod, 'cells'):
        n = len(mod.cells())
        total += n
        print(f'{m:24s} {n:4d} cells   {(mod.__doc__ or "").strip().splitlines()[0]}')
    print(f'{"total":24s} {total:4d}')
    return total
  mod = config_lib.import_module(module)
  if not hasattr(mod, 'cells'):
    raise ValueError(f'{module!r} is a single config (no cells()); run it as --config {module}.')
  rej = rejected(module)
  for arg in mod.cells():
    note = f'   # fails at setup: {rej[arg]}' if arg in rej else ''
    print(launch(module, arg) + note)
  return len(mod.cells())


def show(spec: str, overrides=()) -> str:
  cfg = config_lib.load(spec)
  config_lib.check(cfg)
  config_lib.apply_overrides(cfg, overrides)
  cfg.lock()
  text = config_lib.to_json(cfg)
  print(text)
  return text
