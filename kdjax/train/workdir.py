"""A workdir belongs to one run: lock, config ownership, accumulated totals.

Synopsis:
  check_writable(workdir)                    # one clear error for a read-only place
  with WorkdirLock(workdir): ...             # one process at a time; stale locks detected
  claim(workdir, cfg, on_change='error')     # config.json: same run, or stop with the diff
  totals = Totals(workdir); totals.at(step)  # wall time / images summed over resumed processes

Ownership. A workdir's `config.json` fixes the run. Rerunning with a config
that differs in anything but the keys in `IGNORED_KEYS` (those change how a
run is watched, not what it computes) stops before anything is written and
lists the differing keys. `on_change='new'` (`--force_new`) moves the old run
into a sibling folder `<workdir>.old-<time>`; `on_change='continue'`
(`--allow_config_change`) keeps the checkpoints and metrics, saves the old
config as `config.old-<time>.json` and resumes under the new one. Nothing is
ever deleted.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import socket
import sys
import time
from typing import Any


class WorkdirError(ValueError):
  """A user-fixable problem with the workdir (the CLI prints it as one line)."""


# Keys that do not change what a run computes: rerunning with other values is
# the same run. (Evaluation and checkpoint cadence change what is recorded,
# not the weights, so they may change on resume too.)
IGNORED_KEYS = ('progress_bar', 'log_every_steps', 'keep_checkpoints', 'checkpoint_every_epochs',
                'eval_every_epochs', 'eval_batch_size', 'data.data_dir')

LOCK_NAME = '.lock'


def _stamp() -> str:
  return time.strftime('%Y%m%d-%H%M%S')


def check_writable(workdir: str) -> None:
  """Creates `workdir` and writes a probe file; raises WorkdirError if it cannot."""
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f'.write-test-{os.getpid()}')
    with open(probe, 'w') as f:
      f.write('ok')
    os.remove(probe)
  except OSError as e:
    raise WorkdirError(f'cannot write to workdir {os.path.abspath(workdir)!r} ({e.strerror}); '
                       f'choose another --workdir or fix its permissions.') from None


class WorkdirLock:
  """An exclusive `flock` on `<workdir>/.lock`, which records the holder.

  The kernel drops the lock when its process dies, so a lock file left by a
  killed run is stale by construction: it is taken over with a note.
  """

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, LOCK_NAME)
    self._fd = None

  def _holder(self) -> dict:
    try:
      with open(self.path) as f:
        return json.loads(f.read() or '{}')
    except (OSError, ValueError):
      return {}

  def acquire(self) -> 'WorkdirLock':
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      if e.errno in (errno.ENOLCK, errno.ENOTSUP, errno.EOPNOTSUPP):
        # A filesystem without locks (some network mounts): run unprotected.
        print(f'WARNING: {self.path}: this filesystem has no file locks ({e.strerror}); nothing '
              f'stops a second run in this workdir.', flush=True)
        self._fd = fd
        return self
      os.close(fd)
      if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
        raise
      h = self._holder()
      who = (f'process {h.get("pid", "?")} on {h.get("host", "?")} (started '
             f'{h.get("started", "?")}: {h.get("command", "?")})') if h else 'another process'
      raise WorkdirError(f'workdir {os.path.dirname(self.path)!r} is in use by {who}. Wait for it '
                         f'to finish or stop it; two runs in one workdir would corrupt it.') from None
    stale = self._holder()
    if stale.get('pid') and stale.get('pid') != os.getpid():
      print(f'Note: took over the stale lock of process {stale["pid"]} on {stale.get("host", "?")} '
            f'(no longer running).', flush=True)
    info = {'pid': os.getpid(), 'host': socket.gethostname(), 'started': time.strftime('%Y-%m-%d %H:%M:%S'),
            'command': ' '.join(sys.argv)[:300]}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(info).encode(), 0)
    self._fd = fd
    return self

  def release(self) -> None:
    if self._fd is None:
      return
    try:
      os.ftruncate(self._fd, 0)  # an empty lock file marks a clean exit
    except OSError:
      pass
    try:
      fcntl.flock(self._fd, fcntl.LOCK_UN)
    except OSError:  # no locks on this filesystem; closing is enough
      pass
    os.close(self._fd)
    self._fd = None

  def __enter__(self):
    return self.acquire()

  def __exit__(self, *exc):
    self.release()
    return False


def _flatten(values: Any, prefix: str = '') -> dict[str, Any]:
  if isinstance(values, dict):
    out = {}
    for k, v in values.items():
      out.update(_flatten(v, f'{prefix}{k}.'))
    return out or {prefix[:-1]: {}}
  if isinstance(values, list):  # tuples become lists in JSON
    values = json.dumps(values, sort_keys=True)
  return {prefix[:-1]: values}


def identity(config_json: str) -> dict[str, Any]:
  """The flat key -> value view of a config that decides which run a workdir holds."""
  flat = _flatten(json.loads(config_json))
  return {k: v for k, v in flat.items() if k not in IGNORED_KEYS}


def diff(old_json: str, new_json: str) -> list[tuple[str, Any, Any]]:
  """(key, old, new) for every key whose value differs.

  A key one side lacks (a config written before the key existed) takes the
  schema's default, so adding a key to the schema does not orphan old runs.
  """
  from kdjax import config as config_lib  # pylint: disable=g-import-not-at-top
  defaults = identity(config_lib.to_json(config_lib.base_config()))
  a, b = identity(old_json), identity(new_json)
  get = lambda d, k: d[k] if k in d else defaults.get(k)
  return [(k, get(a, k), get(b, k)) for k in sorted(set(a) | set(b)) if get(a, k) != get(b, k)]


def _entries_to_move(workdir: str) -> list[str]:
  return [e for e in os.listdir(workdir) if e != LOCK_NAME]


def move_aside(workdir: str) -> str:
  """Moves the workdir's run (everything but the lock) to `<workdir>.old-<time>`."""
  dest = os.path.abspath(workdir).rstrip('/') + f'.old-{_stamp()}'
  n = 0
  while os.path.exists(dest + (f'-{n}' if n else '')):
    n += 1
  dest += f'-{n}' if n else ''
  os.makedirs(dest)
  for e in _entries_to_move(workdir):
    shutil.move(os.path.join(workdir, e), os.path.join(dest, e))
  return dest


def claim(workdir: str, config_json: str, on_change: str = 'error', write: bool = True) -> str:
  """Makes `workdir` hold the run of `config_json`; returns 'new', 'same' or 'changed'.

  Writes `config.json` unless the run is the same. Raises WorkdirError (before
  anything is written) when the workdir holds another run and `on_change` is
  'error'. `write=False` only checks.
  """
  if on_change not in ('error', 'new', 'continue'):
    raise ValueError(f"on_change must be 'error', 'new' or 'continue', got {on_change!r}")
  path = os.path.join(workdir, 'config.json')
  old = None
  if os.path.exists(path):
    with open(path) as f:
      old = f.read()
  elif on_change == 'error' and os.path.isdir(os.path.join(workdir, 'checkpoints')):
    raise WorkdirError(f'{workdir!r} holds checkpoints but no config.json, so it cannot be told '
                       f'which run they belong to. Use another --workdir, or --force_new to move '
                       f'them aside.')
  changes = diff(old, config_json) if old is not None else []
  shown = '; '.join(f'{k}: {a!r} -> {b!r}' for k, a, b in changes[:8])
  shown += f' (and {len(changes) - 8} more)' if len(changes) > 8 else ''
  if changes and on_change == 'error':
    raise WorkdirError(
        f'{workdir!r} holds a run with another config ({shown}). Nothing was changed. Use a new '
        f'--workdir, or --force_new to move the old run aside and start fresh, or '
        f'--allow_config_change to resume it under the new config.')
  if not write:
    return 'changed' if changes else ('same' if old is not None else 'new')
  if on_change == 'new' and os.path.isdir(workdir) and _entries_to_move(workdir):
    dest = move_aside(workdir)
    print(f'Moved the previous run{f" ({shown})" if changes else ""} to {dest}.', flush=True)
    status = 'new'
  elif changes:
    keep = os.path.join(workdir, f'config.old-{_stamp()}.json')
    os.replace(path, keep)
    print(f'Config changed ({shown}); resuming under the new one. The old config is kept in '
          f'{keep}.', flush=True)
    status = 'changed'
  else:
    status = 'same' if old is not None else 'new'
  if status != 'same':
    write_atomic(path, config_json)
  return status


def write_atomic(path: str, text: str) -> None:
  """Write-then-rename, so a kill never leaves a half-written file."""
  tmp = f'{path}.tmp-{os.getpid()}'
  with open(tmp, 'w') as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def strict_json(value: Any) -> Any:
  """NaN and infinities become None, so the file is valid strict JSON."""
  if isinstance(value, float) and not (value == value and abs(value) != float('inf')):
    return None
  if isinstance(value, dict):
    return {k: strict_json(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [strict_json(v) for v in value]
  return value


class Totals:
  """Wall time, training time and images, summed over the processes of a run.

  `totals.json` maps each checkpointed step to the totals up to it; a resumed
  process starts from the entry of the step it restored, so time spent after
  the last checkpoint by a killed process is not counted twice.
  """

  FIELDS = ('wall_time_sec', 'train_time_sec', 'train_images')

  def __init__(self, workdir: str, enabled: bool = True):
    self.path = os.path.join(workdir, 'totals.json')
    self.enabled = enabled
    self.by_step: dict[str, dict] = {}
    if os.path.exists(self.path):
      try:
        with open(self.path) as f:
          self.by_step = json.load(f).get('by_step', {})
      except (OSError, ValueError):
        self.by_step = {}

  def at(self, step: int) -> dict[str, float]:
    """The totals recorded at `step` (zeros for a fresh run or an unknown step)."""
    entry = self.by_step.get(str(int(step)))
    if entry is None:
      return {k: 0.0 for k in self.FIELDS}
    return {k: float(entry.get(k, 0.0)) for k in self.FIELDS}

  def partial_epoch(self, step: int) -> tuple[dict[str, float], int]:
    """(metric sums, step count) of the epoch in progress at `step`, for exact epoch means."""
    entry = self.by_step.get(str(int(step))) or {}
    return dict(entry.get('epoch_sums', {})), int(entry.get('epoch_count', 0))

  def record(self, step: int, totals: dict[str, float], epoch_sums: dict[str, float] | None = None,
             epoch_count: int = 0) -> None:
    self.by_step = {k: v for k, v in self.by_step.items() if int(k) < step}
    entry = {k: float(totals[k]) for k in self.FIELDS}
    if epoch_count:
      entry.update(epoch_sums=dict(epoch_sums), epoch_count=int(epoch_count))
    self.by_step[str(int(step))] = entry
    if self.enabled:
      write_atomic(self.path, json.dumps({'by_step': self.by_step}, indent=1))
