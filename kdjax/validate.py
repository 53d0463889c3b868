"""Checks of user input that run before anything is loaded or compiled.

Synopsis:
  validate.check_config_file('configs/x.py')       # exists, parses, defines get_config
  validate.check_overrides(cfg, ['optim.lr=0.1'])  # known keys, values of the right type
  validate.check_config(cfg)                        # values in range (lr > 0, epochs > 0, ...)

Every failure is a `ConfigError` (a ValueError) whose message says what is
wrong and what to do; the CLI prints it as one line and exits with status 2.
"""

from __future__ import annotations

import ast
import difflib
import os
from typing import Any, Sequence


class ConfigError(ValueError):
  pass


# Keys whose children are open-ended (checked by the method / model builders).
_OPEN = ('distill.terms', 'model.kwargs', 'stages')
_TRUE, _FALSE = ('1', 'true', 'yes', 'on'), ('0', 'false', 'no', 'off')


def check_config_file(path: str) -> None:
  """A config file exists, is valid Python and defines `get_config`."""
  if not os.path.exists(path):
    raise ConfigError(f'config file {path!r} does not exist.')
  if os.path.isdir(path):
    raise ConfigError(f'config {path!r} is a folder; pass a file such as '
                      f'configs/digits/teacher_resnet8.py.')
  with open(path) as f:
    source = f.read()
  try:
    tree = ast.parse(source, filename=path)
  except SyntaxError as e:
    raise ConfigError(f'config file {path} line {e.lineno}: {e.msg}.') from None
  if not any(isinstance(n, ast.FunctionDef) and n.name == 'get_config' for n in tree.body):
    what = 'is empty' if not source.strip() else 'defines no get_config()'
    raise ConfigError(f'config file {path} {what}: a config file defines `def get_config(arg=None):` '
                      f'returning a ConfigDict, e.g. `return common.teacher("digits", "resnet8")` '
                      f'after `from configs import common` (see configs/digits/).')


def _keys(node) -> list[str]:
  return sorted(node.keys()) if hasattr(node, 'keys') else []


def _unknown(cfg, parts: list[str], i: int) -> ConfigError:
  """The message for an unknown `parts[:i+1]`: close matches, else the section's keys."""
  section = '.'.join(parts[:i])
  node = cfg
  for p in parts[:i]:
    node = node[p]
  name = parts[i]
  siblings = _keys(node)
  close = difflib.get_close_matches(name, siblings, n=3, cutoff=0.6)
  where = f'in {section}' if section else 'at the top level'
  key = '.'.join(parts[:i + 1])
  dot = section + '.' if section else ''
  if close:
    hint = f'did you mean {", ".join(dot + c for c in close)}?'
  else:
    hint = f'the keys {where} are: {", ".join(dot + s for s in siblings)}.'
  return ConfigError(f'unknown config key {key!r}; {hint}')


def _type_name(value: Any) -> str:
  if isinstance(value, bool):
    return 'true or false'
  if isinstance(value, int):
    return 'an integer'
  if isinstance(value, float):
    return 'a number'
  if isinstance(value, tuple):
    return 'a list such as [1, 2]'
  return type(value).__name__


def _check_value(key: str, text: str, current: Any) -> None:
  """Raises ConfigError if `text` cannot become a value of `current`'s type."""
  if current is None or isinstance(current, str) or hasattr(current, 'keys'):
    return
  if isinstance(current, bool):
    if text.strip().lower() not in _TRUE + _FALSE:
      raise ConfigError(f'--config.{key}={text}: expected true or false.')
    return
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError):
    value = text
  ok = {int: lambda v: isinstance(v, int) and not isinstance(v, bool),
        float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        tuple: lambda v: isinstance(v, (list, tuple))}
  for t, test in ok.items():
    if isinstance(current, t) and not test(value):
      raise ConfigError(f'--config.{key}={text}: expected {_type_name(current)} '
                        f'(currently {current!r}).')


def check_overrides(cfg, overrides: Sequence[str]) -> None:
  """Unknown keys (with the nearest keys of their section) and wrongly typed values."""
  for item in overrides:
    if '=' not in item:
      raise ConfigError(f'override {item!r} is not of the form --config.key=value.')
    key, text = item.split('=', 1)
    key = key.removeprefix('--').removeprefix('config.')
    parts = key.split('.')
    node = cfg
    for i, p in enumerate(parts):
      prefix = '.'.join(parts[:i])
      if prefix in _OPEN or prefix.startswith(tuple(o + '.' for o in _OPEN)):
        node = None  # open-ended: the method / model builder checks it
        break
      if not hasattr(node, 'keys') or p not in node:
        raise _unknown(cfg, parts, i)
      node = node[p]
    _check_value(key, text, node)


def _positive(name: str, value: Any, *, integer: bool = False, zero: bool = False) -> None:
  if isinstance(value, bool) or not isinstance(value, (int, float)) or (
      integer and not float(value).is_integer()):
    raise ConfigError(f'{name} must be {"an integer" if integer else "a number"}, got {value!r}.')
  if value < 0 or (value == 0 and not zero):
    raise ConfigError(f'{name} must be {">= 0" if zero else "> 0"}, got {value!r}.')


def check_config(cfg) -> None:
  """Values in range; everything here would otherwise fail after compiling (or never)."""
  from kdjax import config as config_lib
  _positive('epochs', cfg.epochs)
  for key in ('eval_every_epochs', 'checkpoint_every_epochs', 'keep_checkpoints', 'log_every_steps',
              'eval_batch_size'):
    _positive(key, cfg[key], integer=True)
  if not 0.0 <= cfg.data.label_noise <= 1.0:
    raise ConfigError(f'data.label_noise must be in [0, 1], got {cfg.data.label_noise!r}.')
  try:
    stages = config_lib.stages(cfg)
  except KeyError as e:
    raise ConfigError(e.args[0] if e.args else str(e)) from None
  for i, st in enumerate(stages):
    where = f'stages[{i}].' if cfg.stages else ''
    _positive(f'{where}epochs', st.epochs)
    _positive(f'{where}optim.lr', st.optim.lr)
    _positive(f'{where}optim.batch_size', st.optim.batch_size, integer=True)
    for key in ('momentum', 'weight_decay', 'warmup_epochs'):
      _positive(f'{where}optim.{key}', st.optim[key], zero=True)
