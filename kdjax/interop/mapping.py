"""Per-family naming rules between kdjax variables and PyTorch state_dict keys.

Synopsis:
  family(arch)                      'rd_resnet' | 'rd_resnetv2' | 'torchvision_resnet' | ...
  torch_key(fam, path)              ('params', 'layer1_0', 'shortcut_conv', 'kernel')
                                    -> 'layer1.0.downsample.0.weight'
  guess(keys, shapes)               a one-line description of a state_dict (hint in errors)

Every zoo family names its modules after its PyTorch reference, so the rules are
a handful of renames per family, applied to the flax module path (never to the
position in JAX's flattened tree, which sorts `layer1_10` before `layer1_2`):

  rd_resnet / torchvision_resnet   RD `resnet.py` (resnet8..110, x4), torchvision and
                                   mdistiller ImageNet resnet18/34/50: `layer{K}.{i}`,
                                   shortcut `downsample.0/1`, head `fc`.
  rd_resnetv2                      RD `resnetv2.py` (resnet18/34/50_cifar): shortcut
                                   `shortcut.0/1`, head `linear`.
  rd_wrn                           RD `wrn.py`: `block{g}.layer.{i}`, `convShortcut`, head `fc`.
  rd_vgg                           RD `vgg.py` (BN): conv j of block b is `block{b}.{3j}`,
                                   its BN `block{b}.{3j+1}`; head `classifier`.
  rd_mobilenetv2                   RD `mobilenetv2.py`: stem `conv1.0/1`, `blocks.{g}.{i}.conv.
                                   {0,1,3,4,6,7}`, `conv2.0/1`, head `classifier.0`.
  rd_shufflenet                    RD `ShuffleNetv1.py` / `ShuffleNetv2.py`: `layer{K}.{i}`,
                                   head `linear`.
  md_mobilenetv1                   mdistiller `imagenet/mobilenetv1.py`: `model.{i}.{0,1,3,4}`,
                                   head `fc`.

Leaves: conv `kernel` <-> `weight` (HWIO <-> OIHW), dense `kernel` <-> `weight`
(transposed), `bias` <-> `bias`, BN `scale` <-> `weight`, `mean` <-> `running_mean`,
`var` <-> `running_var`. `num_batches_tracked` has no kdjax counterpart.
"""

from __future__ import annotations

import re
from typing import Callable, Sequence

# Regex rules applied in order to the dotted flax module path (without the leaf).
_Rule = tuple[str, 'str | Callable[[re.Match], str]']

_BLOCK = (r'^layer(\d+)_(\d+)\.', r'layer\1.\2.')
_RULES: dict[str, tuple[_Rule, ...]] = {
    'rd_resnet': (_BLOCK, (r'\.shortcut_conv$', '.downsample.0'),
                  (r'\.shortcut_bn$', '.downsample.1'), (r'^head$', 'fc')),
    'rd_resnetv2': (_BLOCK, (r'\.shortcut_conv$', '.shortcut.0'),
                    (r'\.shortcut_bn$', '.shortcut.1'), (r'^head$', 'linear')),
    'rd_wrn': ((r'^block(\d+)_(\d+)\.', r'block\1.layer.\2.'),
               (r'\.conv_shortcut$', '.convShortcut'),
               (r'^head$', 'fc')),
    'rd_vgg': ((r'^block(\d+)_conv(\d+)$', lambda m: f'block{m[1]}.{3 * int(m[2])}'),
               (r'^block(\d+)_bn(\d+)$', lambda m: f'block{m[1]}.{3 * int(m[2]) + 1}'),
               (r'^head$', 'classifier')),
    'rd_mobilenetv2': ((r'^conv1$', 'conv1.0'), (r'^bn1$', 'conv1.1'),
                       (r'^conv2$', 'conv2.0'), (r'^bn2$', 'conv2.1'),
                       (r'^blocks(\d+)_(\d+)\.', r'blocks.\1.\2.conv.'),
                       (r'\.expand_conv$', '.0'), (r'\.expand_bn$', '.1'), (r'\.dw_conv$', '.3'),
                       (r'\.dw_bn$', '.4'), (r'\.project_conv$', '.6'), (r'\.project_bn$', '.7'),
                       (r'^head$', 'classifier.0')),
    'rd_shufflenet': (_BLOCK, (r'^head$', 'linear')),
    'md_mobilenetv1': ((r'^layer0\.conv$', 'model.0.0'), (r'^layer0\.bn$', 'model.0.1'),
                       (r'^layer(\d+)\.dw_conv$', r'model.\1.0'),
                       (r'^layer(\d+)\.dw_bn$', r'model.\1.1'),
                       (r'^layer(\d+)\.pw_conv$', r'model.\1.3'),
                       (r'^layer(\d+)\.pw_bn$', r'model.\1.4'),
                       (r'^head$', 'fc')),
}
_RULES['torchvision_resnet'] = _RULES['rd_resnet']

_LEAF = {('params', 'kernel'): 'weight', ('params', 'bias'): 'bias', ('params', 'scale'): 'weight',
         ('batch_stats', 'mean'): 'running_mean', ('batch_stats', 'var'): 'running_var'}

# Keys PyTorch keeps that carry no weights kdjax needs.
IGNORED_SUFFIXES = ('num_batches_tracked',)


def family(arch: str) -> str:
  """The naming family of a zoo architecture name.

  Raises:
    ValueError: for architectures without a PyTorch reference (ONE, cohorts).
  """
  if re.fullmatch(r'resnet(18|34|50)', arch):
    return 'torchvision_resnet'
  if re.fullmatch(r'resnet(18|34|50)_cifar', arch):
    return 'rd_resnetv2'
  if re.fullmatch(r'resnet\d+(x4)?', arch) or arch == 'resnet50_basic':
    return 'rd_resnet'
  if arch.startswith('wrn_'):
    return 'rd_wrn'
  if re.fullmatch(r'vgg\d+', arch):
    return 'rd_vgg'
  table = {'mobilenetv2': 'rd_mobilenetv2', 'shufflenetv1': 'rd_shufflenet',
           'shufflenetv2': 'rd_shufflenet', 'mobilenetv1': 'md_mobilenetv1'}
  if arch in table:
    return table[arch]
  raise ValueError(f'{arch!r} has no PyTorch reference to map to (supported: resnet{{6n+2}}[x4], '
                   'resnet18/34/50 (torchvision), resnet18/34/50_cifar, wrn_d_w, vgg8..19, '
                   'mobilenetv2, shufflenetv1, shufflenetv2, mobilenetv1).')


def torch_key(fam: str, path: Sequence[str]) -> str:
  """The state_dict key of the kdjax variable at `path` = (collection, *modules, leaf)."""
  collection, *modules, leaf = path
  if (collection, leaf) not in _LEAF:
    raise ValueError(f'no PyTorch counterpart for kdjax variable {"/".join(path)!r}.')
  name = '.'.join(modules)
  for pattern, repl in _RULES[fam]:
    name = re.sub(pattern, repl, name)
  return f'{name}.{_LEAF[(collection, leaf)]}'


def head_classes(keys_shapes: dict[str, tuple[int, ...]]) -> int | None:
  for k in ('fc.weight', 'linear.weight', 'classifier.weight', 'classifier.0.weight'):
    if k in keys_shapes and len(keys_shapes[k]) == 2:
      return int(keys_shapes[k][0])
  return None


def guess(keys_shapes: dict[str, tuple[int, ...]]) -> str:
  """A short description of what a state_dict looks like, for error messages."""
  keys = list(keys_shapes)
  has = lambda pat: any(re.search(pat, k) for k in keys)  # noqa: E731
  if has(r'^model\.\d+\.\d+\.'):
    fam = 'mdistiller mobilenetv1'
  elif has(r'^blocks\.\d+\.\d+\.conv\.'):
    fam = 'RD mobilenetv2'
  elif has(r'convShortcut') or has(r'^block\d\.layer\.'):
    fam = 'RD wrn_d_w'
  elif has(r'^block\d\.\d+\.'):
    fam = 'RD vgg'
  elif has(r'^layer\d\.\d+\.'):
    fam = 'a resnet' if (has(r'downsample') or has(r'shortcut')) else 'a shufflenet'
    if has(r'\.shortcut\.'):
      fam = 'RD resnetv2 (resnet*_cifar)'
    elif has(r'downsample'):
      stem = keys_shapes.get('conv1.weight')
      fam = ('torchvision resnet18/34/50' if stem is not None and stem[-1] == 7
             else 'RD resnet{6n+2}[x4]')
    per_stage = {}
    for k in keys:
      m = re.match(r'^layer(\d)\.(\d+)\.', k)
      if m:
        per_stage.setdefault(int(m[1]), set()).add(int(m[2]))
    fam += ' with blocks per stage ' + str(tuple(len(per_stage[s]) for s in sorted(per_stage)))
  else:
    fam = 'an unknown architecture'
  classes = head_classes(keys_shapes)
  return f'{fam}' + (f', {classes} classes' if classes is not None else '')
