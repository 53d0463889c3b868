"""Reading and writing PyTorch state_dicts for the kdjax model zoo.

Synopsis:
  sd = load_state_dict(path, prefix='')       torch.load + unwrap + strip prefixes (numpy values)
  variables = to_variables(arch, sd, num_classes, image_shape)   strict; raises ImportMismatch
  sd = to_state_dict(arch, variables)          numpy state_dict in the reference's key order
  save_state_dict(sd, path)                    torch.save of torch tensors (loads with strict=True)

Accepted files: a plain state_dict, `{'model': sd}` (RepDistiller, mdistiller),
`{'state_dict': sd}` or `{'model_state_dict': sd}`, with `module.` (DataParallel /
DDP) or `_orig_mod.` (torch.compile) prefixes. `num_batches_tracked` is dropped.
Conv weights OIHW -> HWIO (grouped and depthwise alike: flax stores
[kh, kw, in / groups, out]); linear weights [out, in] -> [in, out].

Strict: every tensor used, every kdjax variable filled, every shape equal;
otherwise `ImportMismatch` lists the unmatched names and the likely cause, and
nothing is returned. torch is imported only by the functions that read or write
.pth files, so the rest of kdjax never needs it.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from kdjax import models
from kdjax.interop import mapping

_WRAPPERS = ('model', 'state_dict', 'model_state_dict')
_PREFIXES = ('module.', '_orig_mod.')
_MAX_LISTED = 12


class ImportMismatch(ValueError):
  """The state_dict does not fit the requested architecture (details in the message)."""


def _torch():
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError('PyTorch import/export needs torch: pip install "kdjax[torch]" '
                      '(training never needs it).') from e
  return torch


def _is_tensor_map(obj: Any) -> bool:
  return isinstance(obj, Mapping) and bool(obj) and all(hasattr(v, 'shape') for v in obj.values())


def unwrap(obj: Any, prefix: str = '') -> dict[str, np.ndarray]:
  """The flat {key: float32 array} inside a loaded checkpoint object.

  Args:
    obj: what torch.load returned (state_dict, or a dict holding one under
      'model' / 'state_dict' / 'model_state_dict'); values tensors or arrays.
    prefix: keep only keys starting with it (after `module.` stripping) and strip
      it, e.g. 'student.' for a whole mdistiller distiller.

  Returns:
    An ordered dict of numpy arrays, without `num_batches_tracked`.
  """
  seen = []
  while not _is_tensor_map(obj):
    if not isinstance(obj, Mapping):
      raise ValueError(f'the checkpoint holds a {type(obj).__name__}, not a state_dict '
                       '(save `model.state_dict()` rather than the module).')
    inner = [k for k in _WRAPPERS if k in obj and isinstance(obj[k], Mapping)]
    if not inner:
      raise ValueError('no state_dict found in the checkpoint: expected a mapping of tensors or '
                       f'one under {_WRAPPERS}; top-level keys: {sorted(map(str, obj))[:20]}.')
    seen.append(inner[0])
    obj = obj[inner[0]]
  sd = {str(k): v for k, v in obj.items()}
  stripped = True
  while stripped:  # e.g. 'module._orig_mod.' from DDP around torch.compile
    stripped = False
    for p in _PREFIXES:
      if all(k.startswith(p) for k in sd):
        sd = {k[len(p):]: v for k, v in sd.items()}
        stripped = True
  if prefix:
    sd = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    if not sd:
      raise ValueError(f'no key of the checkpoint starts with prefix {prefix!r}.')
  else:
    heads = {k.split('.', 1)[0] for k in sd}
    if heads and heads <= {'student', 'teacher'} and len(heads) == 2:
      raise ValueError('the checkpoint holds a whole distiller (student.* and teacher.* keys): '
                       'pass --prefix student. or --prefix teacher. to pick one network.')
  out = {}
  for k, v in sd.items():
    if k.rsplit('.', 1)[-1] in mapping.IGNORED_SUFFIXES:
      continue
    if hasattr(v, 'detach'):
      v = v.detach().cpu().float().numpy()
    out[k] = np.asarray(v, np.float32)
  return out


def load_state_dict(path: str, prefix: str = '', trust: bool = False) -> dict[str, np.ndarray]:
  """Reads a .pth/.pt/.tar checkpoint and returns its unwrapped state_dict (numpy).

  Args:
    path: the file.
    prefix: see `unwrap`.
    trust: allow arbitrary pickled objects (torch.load(weights_only=False)); only for
      files from a trusted source, when the default safe loader refuses the file.
  """
  torch = _torch()
  try:
    obj = torch.load(path, map_location='cpu', weights_only=not trust)
  except FileNotFoundError:
    raise
  except Exception as e:  # torch raises UnpicklingError / RuntimeError variants
    if trust:
      raise
    raise ValueError(f'torch.load(weights_only=True) refused {path!r} ({type(e).__name__}: '
                     f'{str(e)[:200]}). If the file comes from a source you trust, pass '
                     '--trust_checkpoint to load its pickled objects.') from e
  return unwrap(obj, prefix)


def _flat(tree: Any) -> list[tuple[tuple[str, ...], Any]]:
  """(path, leaf) pairs of a nested mapping, paths of str keys."""
  out = []

  def walk(node, path):
    if isinstance(node, Mapping):
      for k, v in node.items():
        walk(v, path + (str(k),))
    else:
      out.append((path, node))

  walk(tree, ())
  return out


def _to_jax(value: np.ndarray, want: tuple[int, ...]) -> np.ndarray:
  if value.ndim == 4:  # OIHW -> HWIO (grouped: I = in / groups on both sides)
    value = value.transpose(2, 3, 1, 0)
  elif value.ndim == 2 and len(want) == 2:  # Linear [out, in] -> Dense [in, out]
    value = value.T
  return np.ascontiguousarray(value)


def _to_torch(value: np.ndarray) -> np.ndarray:
  if value.ndim == 4:
    value = value.transpose(3, 2, 0, 1)
  elif value.ndim == 2:
    value = value.T
  return np.ascontiguousarray(value)


def _torch_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
  if len(shape) == 4:
    return (shape[3], shape[2], shape[0], shape[1])
  if len(shape) == 2:
    return (shape[1], shape[0])
  return tuple(shape)


def expected_shapes(arch: str, num_classes: int, image_shape=(32, 32, 3), **kwargs) -> dict:
  """{torch key: (kdjax path, kdjax shape)} for every variable of `arch` (shapes only)."""
  fam = mapping.family(arch)
  model = models.create(arch, num_classes, **kwargs)
  # Keys are matched by name (mapping.torch_key), never by position in the flattened tree.
  x = jnp.zeros((1,) + tuple(image_shape))
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
  out = {}
  for coll in ('params', 'batch_stats'):
    for path, leaf in _flat(shapes.get(coll, {})):
      out[mapping.torch_key(fam, (coll,) + path)] = ((coll,) + path, tuple(leaf.shape))
  return out


def _listing(names: list[str]) -> str:
  more = f' ... (+{len(names) - _MAX_LISTED} more)' if len(names) > _MAX_LISTED else ''
  return ', '.join(names[:_MAX_LISTED]) + more


def to_variables(arch: str, sd: Mapping[str, np.ndarray], num_classes: int,
                 image_shape=(32, 32, 3), **kwargs) -> dict:
  """kdjax `{'params', 'batch_stats'}` of `arch` from a state_dict; strict.

  Raises:
    ImportMismatch: tensors left unused, variables left unfilled or shapes that
      differ, with the names and the likely cause (wrong --arch or class count).
  """
  want = expected_shapes(arch, num_classes, image_shape, **kwargs)
  missing = [k for k in want if k not in sd]
  unused = [k for k in sd if k not in want]
  bad = [f'{k}: checkpoint {tuple(sd[k].shape)} vs {arch} {_torch_shape(s)}'
         for k, (_, s) in want.items() if k in sd and tuple(sd[k].shape) != _torch_shape(s)]
  if missing or unused or bad:
    got = {k: tuple(v.shape) for k, v in sd.items()}
    lines = [f'the checkpoint does not fit {arch} with {num_classes} classes '
             f'({len(sd)} tensors, {len(want)} expected).']
    if missing:
      lines.append(f'  {len(missing)} {arch} variables have no tensor: {_listing(missing)}')
    if unused:
      lines.append(f'  {len(unused)} checkpoint tensors are unused: {_listing(unused)}')
    if bad:
      lines.append(f'  {len(bad)} shapes differ: {_listing(bad)}')
    heads = ('fc', 'linear', 'classifier', 'classifier.0')
    head_only = not missing and not unused and all(
        k.split(':')[0].rsplit('.', 1)[0] in heads for k in bad)
    if head_only:
      lines.append(f'  Likely cause: the class count. The checkpoint has '
                   f'{mapping.head_classes(got)} classes; pass --num_classes or the matching '
                   '--dataset.')
    else:
      lines.append(f'  Likely cause: wrong --arch. The checkpoint looks like {mapping.guess(got)}.')
    lines.append('  Nothing was written.')
    raise ImportMismatch('\n'.join(lines))
  variables: dict = {}
  for key, (path, shape) in want.items():
    node = variables
    for p in path[:-1]:
      node = node.setdefault(p, {})
    node[path[-1]] = _to_jax(np.asarray(sd[key], np.float32), shape)
  return variables


def to_state_dict(arch: str, variables: Mapping) -> dict[str, np.ndarray]:
  """The PyTorch state_dict (numpy values) of kdjax `variables` of `arch`.

  BN layers get `num_batches_tracked` = 0 so the file loads with strict=True
  into the reference definition.
  """
  fam = mapping.family(arch)
  out = {}
  for coll in ('params', 'batch_stats'):
    for path, leaf in _flat(variables.get(coll, {})):
      out[mapping.torch_key(fam, (coll,) + path)] = _to_torch(np.asarray(jax.device_get(leaf),
                                                                         np.float32))
  for key in [k for k in out if k.endswith('.running_var')]:
    out[key[:-len('running_var')] + 'num_batches_tracked'] = np.zeros((), np.int64)
  return out


def save_state_dict(sd: Mapping[str, np.ndarray], path: str) -> None:
  """torch.save of the state_dict as torch tensors."""
  torch = _torch()
  torch.save({k: torch.from_numpy(np.array(v)) for k, v in sd.items()}, path)
