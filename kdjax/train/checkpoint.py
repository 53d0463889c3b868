"""orbax checkpoints of the train state, with fall-back past corrupt ones.

Resume order: the workdir's newest readable checkpoint, else scratch. A
checkpoint that fails to restore is reported and skipped (never deleted), so a
crash during a save costs at most one checkpoint interval.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import threading
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp


class CheckpointError(RuntimeError):
  pass


class Checkpointer:

  def __init__(self, directory: str, keep: int = 3, asynchronous: bool = True):
    self.directory = os.path.abspath(directory)
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                             enable_async_checkpointing=asynchronous))

  def steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def save(self, step: int, state: Any) -> None:
    if step in self.manager.all_steps():
      return
    self.manager.save(int(step), args=ocp.args.StandardSave(state), force=True)

  def restore_latest(self, abstract_state: Any) -> tuple[int, Any] | None:
    """Restore the newest readable checkpoint onto `abstract_state`'s shardings."""
    self.manager.wait_until_finished()
    for step in reversed(self.steps()):
      try:
        state = self.manager.restore(step, args=ocp.args.StandardRestore(abstract_state))
        return step, state
      except Exception as e:  # orbax raises many types for truncated/corrupt files.
        logging.warning('checkpoint %d in %s is unreadable (%s: %s); falling back to the '
                        'previous one. The unreadable files are left in place.',
                        step, self.directory, type(e).__name__, str(e)[:300])
        print(f'WARNING: checkpoint {step} is unreadable ({type(e).__name__}); '
              f'falling back to the previous one.', flush=True)
    return None

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def restore_exported(directory: str, abstract_state: Any | None = None) -> tuple[int, Any]:
  """Restore the newest readable checkpoint of another run (e.g. a teacher).

  Without `abstract_state` the arrays come back as numpy/jax arrays on the
  default device, which is what a frozen teacher needs.
  """
  if not os.path.isdir(directory):
    raise FileNotFoundError(f'no checkpoint directory {directory!r}.')
  mngr = ocp.CheckpointManager(os.path.abspath(directory),
                               options=ocp.CheckpointManagerOptions(create=False))
  errors = []
  for step in sorted(mngr.all_steps(), reverse=True):
    try:
      args = ocp.args.StandardRestore(abstract_state) if abstract_state is not None else ocp.args.StandardRestore()
      return step, mngr.restore(step, args=args)
    except Exception as e:
      errors.append(f'{step}: {type(e).__name__}: {str(e)[:200]}')
      print(f'WARNING: checkpoint {step} in {directory} is unreadable; trying the previous one.', flush=True)
  raise CheckpointError(f'no readable checkpoint in {directory!r}'
                        + (f' (tried: {"; ".join(errors)})' if errors else ' (it holds none).'))


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
