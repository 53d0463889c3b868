"""The config schema: every key kdjax reads, with its default.

Synopsis:
  Experiment files in `configs/` start from `base_config()` and change what
  differs. Every key exists here, so the config is locked after loading and a
  mistyped override (`--config.optim.lr_rate=0.1`) is rejected with the list
  of valid keys instead of being silently ignored.

  Durations are in epochs (`*_epochs`); `steps_per_epoch` is derived from the
  dataset size and the global batch size, see `steps()`.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.util
import json
import os
import sys
from typing import Any, Sequence

import ml_collections

ConfigDict = ml_collections.ConfigDict


def base_config() -> ConfigDict:
  c = ConfigDict()
  c.seed = 0
  # Seeds in parallel (kdjax/train/multiseed.py): N runs (seeds seed..seed+N-1, or the
  # `seeds` list) vmapped in one program, written to WORKDIR/seed<k>/.
  c.num_seeds = 1
  c.seeds = ()
  c.epochs = 240
  c.eval_every_epochs = 1
  c.checkpoint_every_epochs = 1
  c.keep_checkpoints = 3
  c.log_every_steps = 50
  c.eval_batch_size = 512
  c.progress_bar = True
  # Compute dtype of convolutions and matmuls: 'float32' or 'bfloat16' (parameters, BN
  # statistics, losses and optimizer state stay float32).
  c.dtype = 'float32'
  c.steps_per_dispatch = 1  # in-memory data: k train steps per dispatch (one lax.scan)

  c.data = ConfigDict(dict(
      name='digits',
      data_dir='',              # TFDS data_dir ('' = TFDS default)
      path='',                  # folder / fer2013 datasets
      image_size=32,            # imagenet / folder / fer2013
      label_noise=0.0,          # symmetric label-noise rate sigma
      label_noise_include_true=True,  # resample over all K classes (Hendrycks et al.)
      imbalance_gamma=0.0,      # power-law class imbalance (0 = off)
      imbalance_max=5000,
      imbalance_min=250,
      noise_seed=0,             # noise / imbalance draw; independent of the training seed
      # On-device augmentation for in-memory datasets.
      crop_padding=4,           # 0 disables the random crop
      pad_mode='constant',      # 'reflect' for the Zagoruyko (WRN) recipe
      flip=True,
      # False keeps the last partial batch of each epoch (PyTorch DataLoader's default,
      # RepDistiller's protocol): ceil(N / B) steps, the last one padded to the fixed batch
      # shape and masked (one compile); in-memory datasets only.
      drop_remainder=True,
  ))

  c.model = ConfigDict(dict(
      name='resnet8',
      kwargs=ConfigDict(),      # architecture overrides, e.g. width_mult
      # Online distillation (DML, IE-DML): train these architectures together
      # as one student; features are 'member<i>/<name>', plus 'ensemble/logits'.
      cohort=(),
      # Start from another run's student: the workdir of a `kdjax train` run
      # (its newest checkpoint). Same architecture (and cohort) required; a
      # different class count re-initialises `head`. '' = random init.
      init_from='',
  ))

  # A trained teacher: the workdir of a `kdjax train` run (its config.json
  # names the architecture). Empty for teacher training.
  # `arch` is checked against the checkpoint and used by `kdjax bench` when
  # no trained teacher exists yet.
  c.teacher = ConfigDict(dict(checkpoint='', arch=''))

  c.distill = ConfigDict(dict(
      ce_weight=1.0,
      # name -> dict(method=<registered name, default: the key>, weight=..., <hparams>)
      terms=ConfigDict(),
  ))

  c.optim = ConfigDict(dict(
      # 'sgd' (PyTorch SGD), 'dot' (DOT, Zhao et al. 2023: separate task and
      # distillation momentum, momentum -/+ dot_delta) or 'adam' (PyTorch Adam,
      # L2 coupled into the gradient; momentum/nesterov unused).
      name='sgd',
      dot_delta=0.075,
      adam_b1=0.9,
      adam_b2=0.999,
      adam_eps=1e-8,
      batch_size=64,
      lr=0.05,
      # If > 0, lr is scaled by batch_size / base_batch_size (linear scaling rule).
      base_batch_size=0,
      momentum=0.9,
      nesterov=False,
      weight_decay=5e-4,
      schedule='piecewise',     # 'piecewise' | 'cosine' | 'constant'
      boundaries_epochs=(150, 180, 210),
      decay_factor=0.1,
      warmup_epochs=0.0,
  ))

  # Multi-stage schedules (init stages of FitNet/FSP/AB/FT/IE-KD). Empty: one
  # stage made of the top-level epochs/optim/distill. Each entry may set name,
  # epochs (default: the top-level `epochs`, so `--config.epochs=N` shortens the
  # main stage), trainable (regexes over 'student/...' and 'aux/<term>/...'
  # paths; empty = everything), distill (ce_weight, terms) and optim overrides.
  # Override one from the command line with `--config.stages.<i>.<key>=value`.
  c.stages = ()
  c.lock()
  return c


# The repository's configs/ folder (a package: its modules import `configs.common`).
CONFIGS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'configs')


def config_path(module: str) -> str:
  """A config module's file: a path, or a name under configs/ ('rd_cifar100', 'digits/kd_...')."""
  names = [module] if module.endswith('.py') else [module + '.py', module]
  for name in names:
    for cand in (name, os.path.join(CONFIGS_DIR, name),
                 os.path.join(CONFIGS_DIR, name.removeprefix('configs/'))):
      if os.path.isfile(cand):
        return os.path.abspath(cand)
  raise FileNotFoundError(f'config {module!r} does not exist; config modules: '
                          f'{", ".join(list_modules())}.')


def list_modules() -> list[str]:
  """The per-paper config modules in configs/ (names for `config_path`)."""
  return sorted(f[:-3] for f in os.listdir(CONFIGS_DIR)
                if f.endswith('.py') and f not in ('__init__.py', 'common.py'))


def _package_root(path: str) -> str | None:
  """The enclosing folder named 'configs' that is a package, if any."""
  d = os.path.dirname(path)
  while d != os.path.dirname(d):
    if os.path.basename(d) == 'configs' and os.path.isfile(os.path.join(d, '__init__.py')):
      return d
    d = os.path.dirname(d)
  return None


def _configs_package(root: str):
  """Register `root` as the `configs` package (whatever else is on sys.path)."""
  pkg = sys.modules.get('configs')
  if pkg is not None and list(getattr(pkg, '__path__', [])) == [root]:
    return
  for name in [m for m in sys.modules if m == 'configs' or m.startswith('configs.')]:
    del sys.modules[name]
  spec = importlib.util.spec_from_file_location('configs', os.path.join(root, '__init__.py'),
                                                submodule_search_locations=[root])
  pkg = importlib.util.module_from_spec(spec)
  sys.modules['configs'] = pkg
  spec.loader.exec_module(pkg)


def import_module(module: str):
  """Import a config module by name or path; `from configs import common` works inside it."""
  path = config_path(module)
  root = _package_root(path)
  _configs_package(root or CONFIGS_DIR)
  if root and os.path.dirname(path) == root:  # a module of the package (configs/<name>.py)
    return importlib.import_module('configs.' + os.path.basename(path)[:-3])
  # Any other file (configs/digits/*.py, configs/examples/*.py, your own) is loaded fresh.
  spec = importlib.util.spec_from_file_location(
      'kdjax_config_' + hashlib.md5(path.encode()).hexdigest(), path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def load_file(path: str, arg: str | None = None) -> ConfigDict:
  """Import a config module (name or path) and call its `get_config([arg])`."""
  mod = import_module(path)
  return mod.get_config(arg) if arg is not None else mod.get_config()


def load(spec: str) -> ConfigDict:
  """'MODULE[:ARG]' -> the module's config for ARG."""
  path, _, arg = spec.partition(':')
  return load_file(path, arg or None)


def _flat_keys(cfg: ConfigDict, prefix: str = '') -> list[str]:
  out = []
  for k, v in cfg.items():
    out.append(prefix + k)
    if isinstance(v, ConfigDict):
      out.extend(_flat_keys(v, prefix + k + '.'))
  return out


def _parse_value(text: str, current: Any) -> Any:
  import ast
  if isinstance(current, str):
    return text
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError):
    value = text
  if isinstance(current, bool):
    if isinstance(value, str):
      value = value.lower() in ('1', 'true', 'yes')
    return bool(value)
  if isinstance(current, float) and isinstance(value, int):
    return float(value)
  if isinstance(current, tuple) and isinstance(value, list):
    return tuple(value)
  return value


def apply_overrides(cfg: ConfigDict, overrides: Sequence[str]) -> ConfigDict:
  """Apply `a.b.c=value` strings; unknown keys fail with the valid ones listed.

  Keys under `distill.terms` and `model.kwargs` may be created, since those
  hold open-ended per-method hyper-parameters that the method builder checks.
  `stages.<i>.<key>` edits stage i (any stage key, optim.* and distill.*).
  """
  for item in overrides:
    if '=' not in item:
      raise ValueError(f'override {item!r} is not of the form key=value.')
    key, text = item.split('=', 1)
    key = key.removeprefix('--').removeprefix('config.')
    if key.split('.')[0] == 'stages' and key != 'stages':
      _override_stage(cfg, key, text)
    else:
      _set(cfg, cfg, key.split('.'), text, key)
  return cfg


def _set(root: ConfigDict, cfg: ConfigDict, parts: list[str], text: str, key: str,
         open_ended=None) -> None:
  open_ended = open_ended or _open_ended
  node = cfg
  for i, p in enumerate(parts[:-1]):
    if p not in node:
      if open_ended(parts[:i]):
        with node.unlocked():
          node[p] = ConfigDict()
      else:
        raise KeyError(_unknown_key_message(root, key))
    node = node[p]
  leaf = parts[-1]
  if leaf not in node:
    if open_ended(parts[:-1]):
      with node.unlocked():
        node[leaf] = _parse_value(text, None)
      return
    raise KeyError(_unknown_key_message(root, key))
  node[leaf] = _parse_value(text, node[leaf])


_STAGE_KEYS = ('name', 'epochs', 'trainable', 'optim', 'distill')


def _override_stage(cfg: ConfigDict, key: str, text: str) -> None:
  parts = key.split('.')
  n = len(cfg.stages)
  if not parts[1].isdigit() or int(parts[1]) >= n or len(parts) < 3:
    raise KeyError(f'{key!r}: this config has {n} stage(s); use stages.<0..{n - 1}>.<key> '
                   f'with key in {_STAGE_KEYS}' if n else
                   f'{key!r}: this config has one stage, made of the top-level keys '
                   f'(e.g. --config.epochs, --config.optim.lr).')
  i, rest = int(parts[1]), parts[2:]
  if rest[0] not in _STAGE_KEYS:
    raise KeyError(f'{key!r}: unknown stage key {rest[0]!r}; valid: {", ".join(_STAGE_KEYS)}.')
  st = ConfigDict(dict(cfg.stages[i]))
  for sub, schema in (('optim', cfg.optim), ('distill', cfg.distill)):
    if rest[0] == sub and sub not in st:
      st[sub] = ConfigDict()
    if rest[0] == sub and len(rest) > 1 and rest[1] not in st[sub]:
      if rest[1] not in schema:
        raise KeyError(f'{key!r}: unknown {sub} key {rest[1]!r}; valid: {sorted(schema)}.')
      with st[sub].unlocked():
        st[sub][rest[1]] = schema[rest[1]] if rest[1] != 'terms' else ConfigDict()
  if rest[0] in ('epochs', 'trainable') and rest[0] not in st:
    st[rest[0]] = cfg.epochs if rest[0] == 'epochs' else ()
  _set(st, st, rest, text, key,
       open_ended=lambda path: path[:2] == ['distill', 'terms'] and len(path) >= 2)
  stages_ = list(cfg.stages)
  stages_[i] = st.to_dict()
  cfg.stages = tuple(stages_)


def _open_ended(path: list[str]) -> bool:
  return (path[:2] == ['distill', 'terms'] and len(path) >= 2) or path[:2] == ['model', 'kwargs']


def _unknown_key_message(cfg: ConfigDict, key: str) -> str:
  keys = _flat_keys(cfg)
  close = difflib.get_close_matches(key, keys, n=3)
  hint = f' Did you mean {", ".join(close)}?' if close else ''
  return f'unknown config key {key!r}.{hint} Valid keys: {", ".join(sorted(keys))}'


def check(cfg: ConfigDict) -> None:
  """Validate a loaded config against the base schema (catches typos in files)."""
  base = set(_flat_keys(base_config()))
  for key in _flat_keys(cfg):
    if key in base or key.startswith(('distill.terms.', 'model.kwargs.')):
      continue
    if key.startswith('stages'):
      continue
    raise KeyError(_unknown_key_message(base_config(), key))


def to_json(cfg: ConfigDict) -> str:
  return cfg.to_json_best_effort(indent=2, sort_keys=True)


def config_hash(cfg: ConfigDict) -> str:
  return hashlib.sha256(json.dumps(json.loads(to_json(cfg)), sort_keys=True).encode()).hexdigest()[:16]


def stages(cfg: ConfigDict) -> list[ConfigDict]:
  """The run's stages, each a full ConfigDict-like view with epochs/optim/distill.

  A stage without `epochs` runs the top-level `epochs`.
  """
  if not cfg.stages:
    return [ConfigDict(dict(name='main', epochs=cfg.epochs, trainable=(),
                            optim=cfg.optim, distill=cfg.distill))]
  out = []
  for i, st in enumerate(cfg.stages):
    st = ConfigDict(st) if not isinstance(st, ConfigDict) else st
    for k in st:
      if k not in _STAGE_KEYS:
        raise KeyError(f'stage {i}: unknown key {k!r}; valid: {", ".join(_STAGE_KEYS)}')
    optim = ConfigDict(cfg.optim.to_dict())
    for k, v in st.get('optim', {}).items():
      if k not in optim:
        raise KeyError(f'stage {i}: unknown optim key {k!r}; valid: {sorted(optim)}')
      optim[k] = tuple(v) if isinstance(optim[k], tuple) else v
    distill = ConfigDict(cfg.distill.to_dict())
    if 'distill' in st:
      for k, v in st.distill.items():
        if k not in distill:
          raise KeyError(f'stage {i}: unknown distill key {k!r}; valid: {sorted(distill)}')
        distill[k] = v
    out.append(ConfigDict(dict(name=st.get('name', f'stage{i}'), epochs=st.get('epochs', cfg.epochs),
                               trainable=tuple(st.get('trainable', ())),
                               optim=optim, distill=distill)))
  return out


def _merge(node: ConfigDict, values: dict) -> None:
  for k, v in values.items():
    if k in node and isinstance(node[k], ConfigDict) and isinstance(v, dict):
      _merge(node[k], v)
    elif k in node:
      node[k] = tuple(v) if isinstance(node[k], tuple) and isinstance(v, list) else v
    else:
      with node.unlocked():
        node[k] = ConfigDict(v) if isinstance(v, dict) else v


def from_json(path: str) -> ConfigDict:
  """Rebuild a run's config from its workdir's config.json (types from the schema)."""
  with open(path) as f:
    values = json.load(f)
  cfg = base_config()
  with cfg.unlocked():
    cfg.stages = tuple(values.pop('stages', ()) or ())
  _merge(cfg, values)
  return cfg
