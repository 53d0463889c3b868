"""orbax checkpoints of the train state, with fall-back past corrupt ones.

Resume order: the workdir's newest readable checkpoint, else scratch. A
checkpoint that fails to restore is reported and skipped, so a crash during a
save costs at most one checkpoint interval. With `repair=True` (training)
incomplete step folders (an interrupted or failed write) and unreadable ones
are moved to `<workdir>/broken_checkpoints/` (never deleted), so the step is
saved again when training reaches it. A failed save raises
`CheckpointSaveError` at once, naming the place and the space needed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import signal
import threading
import time
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp


class CheckpointError(RuntimeError):
  pass


class CheckpointSaveError(CheckpointError):
  """A checkpoint could not be written (disk full, permissions); the run must stop."""


# A complete orbax step folder holds these (the item is saved as 'default').
_REQUIRED = ('_CHECKPOINT_METADATA', os.path.join('default', '_METADATA'))


def incomplete_steps(directory: str) -> list[str]:
  """Step folders (and orbax temporaries) missing the files of a finished save."""
  if not os.path.isdir(directory):
    return []
  bad = []
  for name in sorted(os.listdir(directory)):
    full = os.path.join(directory, name)
    if not os.path.isdir(full):
      continue
    if '.orbax-checkpoint-tmp' in name:
      bad.append(name)
    elif name.isdigit() and not all(os.path.exists(os.path.join(full, r)) for r in _REQUIRED):
      bad.append(name)
  return bad


def tree_bytes(tree: Any) -> int:
  return int(sum(np.dtype(a.dtype).itemsize * int(np.prod(a.shape)) for a in jax.tree.leaves(tree)
                 if hasattr(a, 'shape')))


class Checkpointer:

  def __init__(self, directory: str, keep: int = 3, asynchronous: bool = True, repair: bool = False):
    self.directory = os.path.abspath(directory)
    self.repair = repair
    self._options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                                 enable_async_checkpointing=asynchronous)
    if repair:
      for name in incomplete_steps(self.directory):
        self._move_aside(name, 'incomplete')
    self.manager = ocp.CheckpointManager(self.directory, options=self._options)
    self._pending: tuple[int, int] | None = None  # (step, bytes) of an unfinished async save

  def _move_aside(self, name: str, why: str) -> None:
    broken = os.path.join(os.path.dirname(self.directory), 'broken_checkpoints')
    os.makedirs(broken, exist_ok=True)
    dest = os.path.join(broken, f'{name}.{time.strftime("%Y%m%d-%H%M%S")}')
    shutil.move(os.path.join(self.directory, name), dest)
    print(f'WARNING: checkpoint folder {name} is {why}; moved it to {dest}.', flush=True)

  def steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def _save_error(self, step: int, nbytes: int, e: BaseException) -> CheckpointSaveError:
    try:
      free = shutil.disk_usage(self.directory).free
      space = f'; about {nbytes / 2**20:.1f} MiB needed, {free / 2**20:.1f} MiB free there'
    except OSError:
      space = ''
    previous = [s for s in self.steps() if s < step]
    kept = (f'The previous checkpoint (step {previous[-1]}) is intact'
            if previous else 'No earlier checkpoint exists')
    reason = getattr(e, 'strerror', None) or f'{type(e).__name__}: {str(e)[:200]}'
    return CheckpointSaveError(
        f'could not write checkpoint {step} to {self.directory} ({reason}{space}). {kept}; free '
        f'space (or fix the problem) and run the same command again to resume.')

  def check(self) -> None:
    """Raises CheckpointSaveError if the last asynchronous save failed (cheap; call often)."""
    if self._pending is None:
      return
    step, nbytes = self._pending
    try:
      self.manager.check_for_errors()
    except Exception as e:  # orbax re-raises the writer thread's error
      self._pending = None
      raise self._save_error(step, nbytes, e) from None
    if not self.manager.is_saving_in_progress():
      self._pending = None
      # orbax may log a failed finalisation instead of raising it: check the files.
      if str(step) in incomplete_steps(self.directory) or not os.path.isdir(
          os.path.join(self.directory, str(step))):
        raise self._save_error(step, nbytes, OSError('the checkpoint files are incomplete'))

  def save(self, step: int, state: Any) -> None:
    self.check()
    if step in self.manager.all_steps():
      return
    nbytes = tree_bytes(state)
    try:
      self.manager.save(int(step), args=ocp.args.StandardSave(state), force=True)
    except Exception as e:
      raise self._save_error(step, nbytes, e) from None
    self._pending = (int(step), nbytes)

  def restore_latest(self, abstract_state: Any, all_unreadable_aside: bool = False
                     ) -> tuple[int, Any] | None:
    """Restore the newest readable checkpoint onto `abstract_state`'s shardings.

    With `repair`, unreadable checkpoints newer than the restored one are moved
    aside; if none is readable they are moved only with `all_unreadable_aside`
    (the caller knows they belong to this run's config).
    """
    self.manager.wait_until_finished()
    unreadable, result = [], None
    for step in reversed(self.steps()):
      try:
        state = self.manager.restore(step, args=ocp.args.StandardRestore(abstract_state))
        result = step, state
        break
      except Exception as e:  # orbax raises many types for truncated/corrupt files.
        logging.warning('checkpoint %d in %s is unreadable (%s: %s); falling back to the '
                        'previous one.', step, self.directory, type(e).__name__, str(e)[:300])
        print(f'WARNING: checkpoint {step} is unreadable ({type(e).__name__}); '
              f'falling back to the previous one.', flush=True)
        unreadable.append(step)
    if self.repair and unreadable and (result is not None or all_unreadable_aside):
      for step in unreadable:
        self._move_aside(str(step), 'unreadable')
      self.manager.reload()
    return result

  def wait(self) -> None:
    self.manager.wait_until_finished()
    self.check()

  def close(self) -> None:
    try:
      self.wait()
    finally:
      self.manager.close()


def restore_exported(directory: str, abstract_state: Any | None = None) -> tuple[int, Any]:
  """Restore the newest readable checkpoint of another run (e.g. a teacher).

  Without `abstract_state` the arrays come back as numpy/jax arrays on the
  default device, which is what a frozen teacher needs.
  """
  todo = (f'The run in {os.path.dirname(os.path.abspath(directory))} has not saved a checkpoint '
          f'yet: train it to the end (kdjax train ... --workdir <that run>) or wait for its first '
          f'checkpoint.')
  if not os.path.isdir(directory):
    raise FileNotFoundError(f'no checkpoint directory {directory!r}. {todo}')
  mngr = ocp.CheckpointManager(os.path.abspath(directory),
                               options=ocp.CheckpointManagerOptions(create=False),
                               item_handlers=ocp.StandardCheckpointHandler())
  errors = []
  for step in sorted(mngr.all_steps(), reverse=True):
    try:
      target = abstract_state
      if target is None:
        # Onto this process's first device: the saving run's device count and
        # process count (its topology) need not match this one's.
        dev = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=dev),
                              mngr.item_metadata(step))
      return step, mngr.restore(step, args=ocp.args.StandardRestore(target))
    except Exception as e:
      errors.append(f'{step}: {type(e).__name__}: {str(e)[:200]}')
      print(f'WARNING: checkpoint {step} in {directory} is unreadable; trying the previous one.', flush=True)
  raise CheckpointError(f'no readable checkpoint in {directory!r}'
                        + (f' (tried: {"; ".join(errors)})' if errors else f' (it holds none). {todo}'))


def tree_hash(tree: Any) -> str:
  """A content hash of a pytree of arrays (path + dtype + shape + bytes)."""
  h = hashlib.sha256()
  for path, leaf in sorted(jax.tree_util.tree_flatten_with_path(tree)[0], key=lambda x: str(x[0])):
    arr = np.asarray(jax.device_get(leaf))
    h.update(str(path).encode())
    h.update(json.dumps([str(arr.dtype), list(arr.shape)]).encode())
    h.update(arr.tobytes())
  return h.hexdigest()[:16]


class StopSignal:
  """Turns SIGTERM (and SIGINT) into a flag the loop polls between steps."""

  def __init__(self):
    self.requested = False
    self._previous = {}

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for sig in (signal.SIGTERM, signal.SIGINT):
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def _handle(self, signum, frame):
    if self.requested and signum == signal.SIGINT:
      raise KeyboardInterrupt
    self.requested = True
    print(f'\nReceived {signal.Signals(signum).name}: saving a checkpoint before exiting '
          f'(press Ctrl-C again to abort without saving).', flush=True)

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    return False
