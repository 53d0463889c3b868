"""Eval-mode BatchNorm folded into the preceding convolution, as a wrapper around any zoo model.

Synopsis:
  folded = BatchNormFolded(model)          # same apply / spec / attributes as `model`
  folded.apply(variables, x, train=False)  # == model.apply(...) up to float32 rounding
  conv_bn_pairs(model, variables, x)       # {conv path: (bn path, eps)} that fold

An eval-mode BatchNorm after a convolution is a per-channel affine map,
    bn(conv(x, W) + c) = (conv(x, W) + c - mu) * a + beta,   a = gamma / sqrt(var + eps),
so it equals conv(x, W * a) + (c * a + beta - mu * a) with the kernel scaled along
its output channels (the usual inference-time fold, e.g. Jacob et al. 2018, Sec. 3.2).
The folded forward runs one convolution and one bias add where the plain one runs
the convolution, a subtraction and a multiply-add per element (the number of
element-wise passes stays the same: XLA fuses either form after the conv). On the
2-core CPU of `benchmarks/README.md` that made no measurable difference to the KD
step, so training uses it only on request (`KDJAX_CPU_FOLD_TEACHER_BN=1`, see
`kdjax.runtime.fold_teacher_bn`).

The wrapper keeps the *original* variables: the scaled kernels and biases are computed
inside each call from the BN statistics (34 per-channel kernel multiplies for resnet32x4,
negligible next to the convolutions), so anything that reads the teacher's BN
statistics (OFD's margins) or parameters sees them unchanged. Only
`apply(..., train=False)` without `mutable` folds; `train=True` (teacher BN on
batch statistics) and any other call pass straight through to the model.

Which convolution feeds which BN is found by tracing the model once (shapes only):
a pair folds when the BN's input is exactly the output of an `nn.Conv` that no
other module and no returned output consumes. Models with a non-float32 compute
dtype are not folded (the scale would be applied before the low-precision rounding).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from kdjax.models import common

_BN_TYPES = (common.BatchNorm, nn.BatchNorm)


def _is_bn(module) -> bool:
  return isinstance(module, _BN_TYPES)


def _path(module) -> tuple[str, ...]:
  return tuple(module.scope.path)


def conv_bn_pairs(model, variables, *args, **kwargs) -> dict[tuple[str, ...], tuple[tuple[str, ...], float]]:
  """{conv path: (bn path, bn epsilon)} of the foldable pairs in `model.apply(variables, *args, **kwargs)`.

  Shapes only (`jax.eval_shape`). A conv qualifies when its output is consumed by
  exactly one module call, an eval-mode BN, and is not itself a returned output.
  """
  conv_out = {}   # id(output) -> conv path
  consumers = {}  # conv path -> [(consumer path, consumer is an eval-mode BN, its epsilon)]
  keep = []       # keeps traced conv outputs alive so that their ids stay unique
  returned = set()

  def record(next_fun, args_, kw, context):
    if context.method_name != '__call__':
      return next_fun(*args_, **kw)
    m = context.module
    for a in list(args_) + list(kw.values()):
      if id(a) in conv_out:
        is_bn = _is_bn(m) and bool(m.use_running_average)
        consumers[conv_out[id(a)]].append((_path(m), is_bn, float(getattr(m, 'epsilon', 0.0))))
    out = next_fun(*args_, **kw)
    if isinstance(m, nn.Conv):
      keep.append(out)
      conv_out[id(out)] = _path(m)
      consumers[_path(m)] = []
    return out

  is_array = [_is_array(a) for a in args]

  def run(v, arrays):
    it = iter(arrays)
    full = [next(it) if arr else a for a, arr in zip(args, is_array)]
    with nn.intercept_methods(record):
      res = model.apply(v, *full, **kwargs)
    returned.update(id(x) for x in jax.tree.leaves(res))
    return res

  jax.eval_shape(run, _abstract(variables), [_abstract(a) for a, arr in zip(args, is_array) if arr])
  pairs = {}
  for out_id, conv in conv_out.items():
    uses = consumers[conv]
    if out_id not in returned and len(uses) == 1 and uses[0][1]:
      pairs[conv] = (uses[0][0], uses[0][2])
  return pairs


def _is_array(a) -> bool:
  return isinstance(a, (jax.Array, jax.ShapeDtypeStruct)) or hasattr(a, 'shape') and hasattr(a, 'dtype')


def _abstract(tree):
  return jax.tree.map(lambda a: jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a)), tree)


def _get(tree, path):
  for p in path:
    tree = tree[p]
  return tree


def _set(tree, path, value):
  """A copy of the nested dict `tree` with `tree[path] = value` (only the path is copied)."""
  if not path:
    return value
  out = dict(tree)
  out[path[0]] = _set(tree[path[0]], path[1:], value)
  return out


class BatchNormFolded:
  """`model` with every eval-mode conv -> BN pair folded (see the module docstring).

  Attribute access other than `apply` goes to the wrapped model (`spec()`,
  `num_classes`, ...); `unwrapped` is the model itself.
  """

  def __init__(self, model):
    self.unwrapped = model
    self._pairs_cache = {}

  def __getattr__(self, name):
    return getattr(self.unwrapped, name)

  def __repr__(self):
    return f'BatchNormFolded({self.unwrapped!r})'

  def _pairs(self, variables, args, kwargs):
    key = (jax.tree.structure(variables),
           tuple((jnp.shape(a), str(jnp.result_type(a))) if _is_array(a) else repr(a) for a in args),
           tuple(sorted((k, repr(v)) for k, v in kwargs.items())))
    if key not in self._pairs_cache:
      self._pairs_cache[key] = conv_bn_pairs(self.unwrapped, variables, *args, **kwargs)
    return self._pairs_cache[key]

  def apply(self, variables, *args, **kwargs):
    model = self.unwrapped
    dtype = getattr(model, 'dtype', None)
    if (kwargs.get('train', False) or kwargs.get('mutable', False) or 'params' not in variables
        or (dtype is not None and jnp.dtype(dtype) != jnp.float32)):
      return model.apply(variables, *args, **kwargs)
    pairs = self._pairs(variables, args, kwargs)
    if not pairs:
      return model.apply(variables, *args, **kwargs)
    params, stats = variables['params'], variables['batch_stats']
    folded_bn = {}  # bn path -> folded bias
    for conv, (bn, eps) in pairs.items():
      p, s = _get(params, bn), _get(stats, bn)
      mul = jax.lax.rsqrt(s['var'] + eps) * p['scale']
      cp = dict(_get(params, conv))
      bias = cp.get('bias')
      cp['kernel'] = cp['kernel'] * mul
      bias_fold = p['bias'] - s['mean'] * mul
      if bias is not None:
        cp['bias'] = bias * mul
      params = _set(params, conv, cp)
      folded_bn[bn] = bias_fold

    def fold(next_fun, args_, kw, context):
      m = context.module
      if context.method_name == '__call__' and _is_bn(m):
        path = _path(m)
        if path in folded_bn:
          return jnp.asarray(args_[0], jnp.float32) + folded_bn[path]
      return next_fun(*args_, **kw)

    with nn.intercept_methods(fold):
      return model.apply({**variables, 'params': params}, *args, **kwargs)
