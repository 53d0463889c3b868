"""Model zoo: exact parameter counts, feature names/shapes, BN, stochastic depth, registry."""

import functools
import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kdjax import models

# Exact trainable-parameter counts (100 classes; ImageNet nets 1000 classes), computed
# from the reference definitions (RD models/*.py, torchvision, mdistiller), and the
# figure docs/methods.md gives (mobilenetv1 is not listed there: the usual 4.23M).
PARAMS = {
    'resnet8': (83_892, '0.084'), 'resnet14': (181_108, '0.181'), 'resnet20': (278_324, '0.278'),
    'resnet26': (375_540, '0.376'), 'resnet32': (472_756, '0.473'), 'resnet44': (667_188, '0.667'),
    'resnet56': (861_620, '0.862'), 'resnet110': (1_736_564, '1.737'),
    'resnet8x4': (1_233_540, '1.234'), 'resnet32x4': (7_433_860, '7.434'),
    'wrn_16_1': (180_916, '0.181'), 'wrn_16_2': (703_284, '0.703'), 'wrn_40_1': (569_780, '0.570'),
    'wrn_40_2': (2_255_156, '2.255'), 'wrn_10_2': (315_316, '0.315'), 'wrn_28_2': (1_479_220, '1.479'),
    'wrn_16_4': (2_772_020, '2.772'), 'wrn_28_4': (5_872_180, '5.872'), 'wrn_40_4': (8_972_340, '8.972'),
    'wrn_46_4': (10_522_420, '10.52'), 'wrn_10_10': (7_493_044, '7.493'),
    'wrn_16_10': (17_174_324, '17.174'), 'wrn_28_10': (36_536_884, '36.54'),
    'vgg8': (3_965_028, '3.965'), 'vgg11': (9_277_284, '9.277'), 'vgg13': (9_462_180, '9.462'),
    'vgg16': (14_774_436, '14.774'), 'vgg19': (20_086_692, '20.087'),
    'mobilenetv2': (812_836, '0.813'), 'shufflenetv1': (949_258, '0.949'),
    'shufflenetv2': (1_355_528, '1.356'),
    'resnet10_cifar': (4_949_412, '4.95'), 'mobilenetv1_cifar': (3_309_476, '3.31'),
    'resnet18_cifar': (11_220_132, '11.22'), 'resnet34_cifar': (21_328_292, '21.33'),
    'resnet50_cifar': (23_705_252, '23.705'),
    'resnet18': (11_689_512, '11.69'), 'resnet34': (21_797_672, '21.80'),
    'resnet50': (25_557_032, '25.56'), 'mobilenetv1': (4_231_976, '4.23'),
    'resnet50_basic': (764_404, '0.764'),  # Self-Guidance's CIFAR ResNet-50 (n = 8)
    # Binary XNOR-Net++ ResNets (SRRL Table 8): the scales depend on the input size (32 / 64).
    'binary_resnet18_cifar': (11_228_420, '11.23'), 'binary_resnet34_cifar': (21_344_404, '21.34'),
    'binary_resnet18': (11_697_560, '11.70'), 'binary_resnet34': (21_813_344, '21.81'),
}
IMAGENET = ('resnet18', 'resnet34', 'resnet50', 'mobilenetv1', 'binary_resnet18', 'binary_resnet34')


def _family(name):
  if name.startswith('binary_'):
    return 'binary_cifar' if name.endswith('_cifar') else 'binary'
  if name in IMAGENET:
    return 'imagenet'
  if name == 'mobilenetv1_cifar':
    return 'mobilenetv1_cifar'
  for prefix in ('wrn', 'vgg', 'mobilenetv2', 'shufflenetv1', 'shufflenetv2'):
    if name.startswith(prefix):
      return prefix
  return 'resnet_v2' if name.endswith('_cifar') else 'resnet'


# Per family: spatial sizes of stem, stage1..N for a 32x32 input (ImageNet: 64x64).
SPATIAL = {
    'resnet': (32, 32, 16, 8), 'wrn': (32, 32, 16, 8), 'vgg': (32, 16, 8, 4, 4),
    'mobilenetv2': (16, 16, 8, 4, 2), 'shufflenetv1': (32, 16, 8, 4),
    'shufflenetv2': (32, 16, 8, 4), 'resnet_v2': (32, 32, 16, 8, 4), 'imagenet': (32, 16, 8, 4, 2),
    'mobilenetv1_cifar': (32, 32, 16, 8, 8),
    'binary': (32, 16, 8, 4, 2), 'binary_cifar': (32, 32, 16, 8, 4),
}
RESIDUAL = ('resnet', 'wrn', 'resnet_v2')


def _classes(name):
  return 1000 if name in IMAGENET else 100


def _size(name):
  return 64 if name in IMAGENET else 32


@functools.lru_cache(maxsize=None)
def _abstract(name, size=None, num_classes=None):
  """(model, variable shapes, (logits, features) shapes), all via eval_shape."""
  size = size or _size(name)
  model = models.create(name, num_classes or _classes(name))
  x = jax.ShapeDtypeStruct((2, size, size, 3), jnp.float32)
  var = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
  out = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), var, x)
  return model, var, out


def _get(tree, path):
  for p in path:
    tree = tree[p]
  return tree


def test_names_are_the_documented_ones():
  assert set(models.names()) == set(PARAMS)


@pytest.mark.parametrize('name', sorted(PARAMS))
def test_exact_param_count(name):
  exact, figure = PARAMS[name]
  _, var, _ = _abstract(name)
  n = models.param_count(var)
  assert n == exact
  assert models.param_count(var['params']) == exact
  decimals = len(figure.split('.')[1])
  assert f'{n / 1e6:.{decimals}f}' == figure


@pytest.mark.parametrize('name', sorted(PARAMS))
def test_feature_names_and_shapes(name):
  model, var, (logits, feats) = _abstract(name)
  fam = _family(name)
  spatial = SPATIAL[fam]
  n_stages = len(spatial) - 1
  stages = [f'stage{k}' for k in range(1, n_stages + 1)]
  expected = {'stem', 'last_map', 'pooled', 'logits', *stages, *(s + '_preact' for s in stages)}
  assert set(feats) == expected
  k = _classes(name)
  assert logits.shape == (2, k) and feats['logits'].shape == (2, k)
  assert feats['stem'].shape[1] == spatial[0]
  for s, hw in zip(stages, spatial[1:]):
    assert feats[s].shape[1:3] == (hw, hw), s
    assert feats[s + '_preact'].shape == feats[s].shape, s
  assert feats['last_map'].ndim == 4
  assert feats['pooled'].shape == (2, feats['last_map'].shape[-1])
  head = var['params']['head']
  assert head['kernel'].shape == (feats['pooled'].shape[-1], k) and head['bias'].shape == (k,)
  # bn_before_relu: one BN per preact feature, with one scale per channel of that feature
  # (ShuffleNetV2's bn3 covers the second half of the channels only; see shufflenet.py).
  bn_map = model.bn_before_relu()
  # Binary stages end in a sum: no BN feeds a ReLU there (binary_resnet.py).
  assert set(bn_map) == (set() if fam.startswith('binary') else {s + '_preact' for s in stages})
  for feat_name, path in bn_map.items():
    bn = _get(var['params'], path)
    assert set(bn) == {'scale', 'bias'}
    c = feats[feat_name].shape[-1]
    assert bn['scale'].shape == ((c // 2,) if fam == 'shufflenetv2' else (c,))
    assert isinstance(path, tuple) and all(isinstance(p, str) for p in path)
    assert tuple(path) in _get_paths(var['batch_stats'])
  if fam in RESIDUAL or name.startswith('resnet'):
    assert isinstance(model.num_blocks, int) and model.num_blocks > 0
  else:
    assert not hasattr(model, 'num_blocks')
  _check_spec(name, model, var, feats, n_stages)


def _param_paths(params):
  return ['/'.join(str(getattr(k, 'key', k)) for k in path)
          for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]]


def _matched(regexes, paths):
  return {p for p in paths if any(re.match(r, p) for r in regexes)}


def _check_spec(name, model, var, feats, n_stages):
  """model.spec() agrees with the traced model: names, stages, blocks, BN paths, layouts."""
  spec = model.spec()
  assert spec.arch == name
  assert set(spec.feature_names) == set(feats) - {'logits'}
  assert len(spec.feature_names) == len(set(spec.feature_names))
  assert spec.num_stages == n_stages
  assert spec.num_blocks == getattr(model, 'num_blocks', 0)
  assert spec.has_forward_from == hasattr(model, 'forward_from')
  # stage_k's BN map: every listed path exists with one scale per channel of its feature.
  expected_bn = {} if name == 'shufflenetv2' else model.bn_before_relu()
  assert dict(spec.bn_before_relu) == expected_bn
  for feat_name, path in spec.bn_before_relu.items():
    assert _get(var['params'], path)['scale'].shape == (feats[feat_name].shape[-1],)
  # params_up_to grows with k, every match is a real param, head is never in a stage.
  paths = _param_paths(var['params'])
  prev = set()
  for k in range(n_stages + 1):
    cur = _matched(spec.params_up_to(k), paths)
    assert prev < cur, (k, cur - prev)
    prev = cur
  assert not any(p.startswith('head/') for p in prev)
  with pytest.raises(ValueError, match='stage must be in'):
    spec.params_up_to(n_stages + 1)
  # num_blocks = the residual blocks in the parameter tree (layerK_i / blockK_i).
  blocks = {p.split('/')[0] for p in paths if re.fullmatch(r'(layer|block)\d+_\d+', p.split('/')[0])}
  assert spec.num_blocks == (len(blocks) if hasattr(model, 'num_blocks') else 0)
  assert hash(spec) == hash(model.spec()) and spec == model.spec()


@pytest.mark.parametrize('name', ['resnet8', 'resnet8x4', 'wrn_10_2', 'resnet10_cifar',
                                  'resnet50_cifar', 'resnet18'])
def test_spec_num_blocks_is_the_accepted_branch_scale_length(name):
  model = models.create(name, 10)
  spec = model.spec()
  x = jax.ShapeDtypeStruct((2, 8, 8, 3), jnp.float32)
  var = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
  jax.eval_shape(lambda v, x: model.apply(v, x, branch_scale=jnp.ones((spec.num_blocks,))), var, x)
  with pytest.raises(ValueError, match=f'shape \\({spec.num_blocks},\\)'):
    jax.eval_shape(lambda v, x: model.apply(v, x, branch_scale=jnp.ones((spec.num_blocks + 1,))),
                   var, x)


def _stage_grads(name, size=16, num_classes=10):
  """{param path: [num_stages + 1] bool}, True where d(r . stage_k)/d(param) != 0 (eval mode)."""
  model = models.create(name, num_classes)
  spec = model.spec()
  x = jax.random.normal(jax.random.key(1), (2, size, size, 3))
  var = model.init(jax.random.key(0), x, train=False)
  keys = ['stem'] + [f'stage{k}' for k in range(1, spec.num_stages + 1)]

  @jax.jit
  def grads(params):
    def losses(p):
      _, f = model.apply({**var, 'params': p}, x, train=False)
      # A random weighting, so no symmetry can cancel a real dependence.
      return jnp.stack([jnp.sum(f[k] * jax.random.normal(jax.random.key(i), f[k].shape))
                        for i, k in enumerate(keys)])
    return jax.jacrev(losses)(params)

  g = grads(var['params'])
  flat = jax.tree_util.tree_flatten_with_path(g)[0]
  return spec, {'/'.join(str(getattr(k, 'key', k)) for k in path):
                np.asarray(jnp.any(leaf.reshape(leaf.shape[0], -1) != 0, axis=1)) for path, leaf in flat}


@pytest.mark.parametrize('name', ['resnet8', pytest.param('wrn_10_2', marks=pytest.mark.slow),
                                  pytest.param('vgg8', marks=pytest.mark.slow),
                                  pytest.param('mobilenetv2', marks=pytest.mark.slow),
                                  pytest.param('shufflenetv1', marks=pytest.mark.slow)])
def test_params_up_to_matches_the_gradient_support(name):
  """params_up_to(k) is exactly the set of params with a nonzero gradient of stage_k."""
  spec, nonzero = _stage_grads(name)
  for k in range(spec.num_stages + 1):
    influencing = {p for p, nz in nonzero.items() if nz[k]}
    assert _matched(spec.params_up_to(k), list(nonzero)) == influencing, k


def test_spec_one_and_cohort():
  from kdjax.models.cohort import Cohort
  x = jax.ShapeDtypeStruct((2, 16, 16, 3), jnp.float32)
  for model in (models.create('one_resnet8', 10), models.create('one_wrn_10_1', 10),
                Cohort((models.create('resnet8', 10), models.create('vgg8', 10)))):
    var = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
    _, feats = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), var, x)
    spec = model.spec()
    assert set(spec.feature_names) == set(feats) - {'logits'}
    assert spec.num_stages == 3 and spec.num_blocks == 0
    paths = _param_paths(var['params'])
    for feat_name, path in spec.bn_before_relu.items():
      assert _get(var['params'], path)['scale'].shape == (feats[feat_name].shape[-1],)
    top = _matched(spec.params_up_to(3), paths)
    assert top and not any('head' in p or 'gate' in p for p in top)
  assert spec.arch == 'cohort(resnet8,vgg8)'
  assert '^member1/block0_(conv|bn)\\d+/' in spec.params_up_to(0)
  assert set(spec.bn_before_relu) == ({f'member0/stage{k}_preact' for k in (1, 2, 3)}
                                    | {f'member1/stage{k}_preact' for k in (1, 2, 3, 4)})


def _get_paths(tree, prefix=()):
  out = set()
  for k, v in tree.items():
    if 'mean' in v and not hasattr(v['mean'], 'items'):
      out.add(prefix + (k,))
    else:
      out |= _get_paths(v, prefix + (k,))
  return out


@pytest.mark.parametrize('name', ['resnet8', 'wrn_16_1', 'vgg8', 'mobilenetv2', 'shufflenetv1',
                                  'shufflenetv2', 'resnet18_cifar', 'resnet18', 'mobilenetv1'])
def test_small_inputs(name):
  # 8x8 digits run through every family (global pooling is a mean over H, W).
  _, _, (logits, feats) = _abstract(name, size=8, num_classes=10)
  assert logits.shape == (2, 10)
  assert feats['pooled'].ndim == 2


# ---------------------------------------------------------------- real forwards (small)

def _fake_variables(var_shapes, seed=0):
  """Real-valued variables from eval_shape'd ones, without compiling `init`.

  Kernels ~ N(0, 2 / fan_in), BN scale 1 / bias 0 / running mean 0 / var 1, other
  biases 0. (Compiling `init` costs seconds per net on CPU; the variable shapes
  are what the model defines, checked above.)
  """
  rng = np.random.default_rng(seed)

  def make(path, s):
    key = path[-1].key
    if key == 'kernel':
      fan_in = int(np.prod(s.shape[:-1]))
      return jnp.asarray(rng.normal(0.0, np.sqrt(2.0 / fan_in), s.shape), s.dtype)
    if key in ('scale', 'var'):
      return jnp.ones(s.shape, s.dtype)
    return jnp.zeros(s.shape, s.dtype)

  return jax.tree_util.tree_map_with_path(make, var_shapes)


@functools.lru_cache(maxsize=None)
def _real(name, size):
  model, var, _ = _abstract(name, size=size, num_classes=10)
  x = jax.random.normal(jax.random.key(1), (2, size, size, 3), jnp.float32)
  return model, _fake_variables(var), x


@functools.lru_cache(maxsize=None)
def _fwd(name, size):
  """A jitted eval-mode forward taking branch_scale as a traced argument."""
  model, _, _ = _real(name, size)
  return jax.jit(lambda v, x, scale: model.apply(v, x, train=False, branch_scale=scale))


FAMILY_REPS = [('resnet8', 32), ('wrn_16_1', 32), ('vgg8', 32), ('mobilenetv2', 32),
               ('shufflenetv1', 32), ('shufflenetv2', 32), ('resnet18_cifar', 16),
               ('resnet18', 64), ('mobilenetv1', 64)]


@pytest.mark.parametrize('name,size', FAMILY_REPS)
def test_jit_forward(name, size):
  model, var, x = _real(name, size)
  fwd = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=['batch_stats']))
  (logits, feats), _ = fwd(var, x)
  assert logits.shape == (2, 10)
  assert bool(jnp.all(jnp.isfinite(logits)))
  head = var['params']['head']
  np.testing.assert_allclose(feats['pooled'] @ head['kernel'] + head['bias'], logits,
                             rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(feats['pooled'], feats['last_map'].mean(axis=(1, 2)),
                             rtol=1e-5, atol=1e-5)
  fam = _family(name)
  n = len(SPATIAL[fam]) - 1
  for k in range(1, n + 1):
    s, pre = feats[f'stage{k}'], feats[f'stage{k}_preact']
    if fam in ('resnet', 'resnet_v2', 'imagenet', 'vgg', 'shufflenetv1'):
      np.testing.assert_allclose(s, jax.nn.relu(pre), atol=1e-6)   # stage = relu(preact)
      assert float(pre.min()) < 0.0
    elif fam == 'mobilenetv2':
      np.testing.assert_array_equal(s, pre)                        # RD: same tensors
    elif fam == 'shufflenetv2':                                     # preact is pre-shuffle
      c = s.shape[-1] // 2
      np.testing.assert_allclose(jnp.sort(s, -1), jnp.sort(
          jnp.concatenate([pre[..., :c], jax.nn.relu(pre[..., c:])], -1), -1), atol=1e-6)
  if fam == 'wrn':
    # stage3_preact is the final BN output; last_map is its ReLU; stage maps are pre-activation.
    np.testing.assert_allclose(feats['last_map'], jax.nn.relu(feats['stage3_preact']), atol=1e-6)
    assert float(feats['stage1'].min()) < 0.0


def test_train_updates_batch_stats_eval_does_not():
  # The one real (jit-compiled) `init` of the suite.
  model = models.create('resnet8', 10)
  x = jax.random.normal(jax.random.key(1), (4, 16, 16, 3), jnp.float32)
  var = jax.jit(lambda x: model.init(jax.random.key(0), x, train=False))(x)
  assert set(var) == {'params', 'batch_stats'}
  fwd = jax.jit(lambda v, x, train: model.apply(v, x, train=train, mutable=['batch_stats']),
                static_argnums=2)
  (out_train, _), new = fwd(var, x, True)
  changed = jax.tree_util.tree_map(lambda a, b: bool(jnp.any(a != b)), var['batch_stats'],
                                   new['batch_stats'])
  assert all(jax.tree_util.tree_leaves(changed))
  # PyTorch momentum 0.1: running_mean = 0.9 * 0 + 0.1 * batch mean of the stem conv output.
  conv_out = jax.lax.conv_general_dilated(
      x, var['params']['conv1']['kernel'], (1, 1), ((1, 1), (1, 1)),
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  np.testing.assert_allclose(new['batch_stats']['bn1']['mean'],
                             0.1 * conv_out.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-6)
  # Eval mode uses the running averages and leaves them untouched.
  (out_eval, _), state = fwd(var, x, False)
  chex.assert_trees_all_equal(state['batch_stats'], var['batch_stats'])
  assert not np.allclose(out_eval, out_train)


# ---------------------------------------------------------------- stochastic depth

@pytest.mark.parametrize('name', ['resnet8', 'wrn_16_1'])
def test_branch_scale_ones_equals_none_and_zero_differs(name):
  model, var, x = _real(name, 32)
  fwd = _fwd(name, 32)
  L = model.num_blocks
  ref, _ = fwd(var, x, None)
  ones, _ = fwd(var, x, jnp.ones((L,)))
  np.testing.assert_allclose(ones, ref, rtol=1e-6, atol=1e-6)
  zeros, _ = fwd(var, x, jnp.zeros((L,)))
  assert not np.allclose(zeros, ref)
  expected, _ = fwd(var, x, jnp.asarray(models.survival_probs(L, 0.5)))
  assert not np.allclose(expected, ref)
  with pytest.raises(ValueError, match='branch_scale must have shape'):
    fwd(var, x, jnp.ones((L + 1,)))


def test_branch_scale_traces_once():
  model, var, x = _real('resnet8', 32)

  @jax.jit
  @chex.assert_max_traces(n=1)
  def fwd(v, x, mask):
    return model.apply(v, x, train=False, branch_scale=mask)[0]

  a = fwd(var, x, jnp.array([1.0, 0.0, 1.0]))
  b = fwd(var, x, jnp.array([0.0, 1.0, 1.0]))
  c = fwd(var, x, jnp.asarray(models.survival_probs(3)))
  assert not np.allclose(a, b) and not np.allclose(b, c)


def _perturb(var, path):
  params = jax.tree_util.tree_map(lambda a: a, var['params'])
  leaf = _get(params, path[:-1])
  leaf[path[-1]] = leaf[path[-1]] + 1.0
  return {**var, 'params': params}


def test_dropped_block_reduces_to_shortcut_resnet():
  _, var, x = _real('resnet8', 32)   # one block per stage
  fwd = _fwd('resnet8', 32)
  # layer1_0 (16 -> 16, stride 1) has an identity shortcut: dropped, stage1 == stem.
  _, f = fwd(var, x, jnp.array([0.0, 1.0, 1.0]))
  np.testing.assert_allclose(f['stage1'], f['stem'], atol=1e-6)
  # layer2_0 has a projection: dropped, its output no longer depends on the branch weights,
  # but still on the projection (output = relu(shortcut_bn(shortcut_conv(x)))).
  mask = jnp.array([1.0, 0.0, 1.0])
  _, f0 = fwd(var, x, mask)
  _, f1 = fwd(_perturb(var, ('layer2_0', 'conv1', 'kernel')), x, mask)
  _, f2 = fwd(_perturb(var, ('layer2_0', 'shortcut_conv', 'kernel')), x, mask)
  np.testing.assert_allclose(f1['stage2'], f0['stage2'], atol=1e-6)
  assert not np.allclose(f2['stage2'], f0['stage2'])
  _, f3 = fwd(_perturb(var, ('layer2_0', 'conv1', 'kernel')), x, jnp.ones((3,)))
  assert not np.allclose(f3['stage2'], f0['stage2'])


def test_dropped_block_reduces_to_shortcut_wrn():
  _, var, x = _real('wrn_16_1', 32)   # two units per group; block1_0 is 16 -> 16
  fwd = _fwd('wrn_16_1', 32)
  _, f = fwd(var, x, jnp.array([0.0, 0.0, 1.0, 1.0, 1.0, 1.0]))
  np.testing.assert_allclose(f['stage1'], f['stem'], atol=1e-6)
  # block2_0 (16 -> 32, stride 2): dropped, it is conv_shortcut(relu(bn1(x))).
  mask = jnp.array([1.0, 1.0, 0.0, 1.0, 1.0, 1.0])
  _, g0 = fwd(var, x, mask)
  _, g1 = fwd(_perturb(var, ('block2_0', 'conv2', 'kernel')), x, mask)
  _, g2 = fwd(_perturb(var, ('block2_0', 'conv_shortcut', 'kernel')), x, mask)
  np.testing.assert_allclose(g1['stage2'], g0['stage2'], atol=1e-5)
  assert not np.allclose(g2['stage2'], g0['stage2'])


@pytest.mark.parametrize('name', ['vgg8', 'mobilenetv2', 'shufflenetv1', 'shufflenetv2',
                                  'mobilenetv1'])
def test_branch_scale_rejected_without_residual_blocks(name):
  model, var, _ = _abstract(name, size=8, num_classes=10)
  x = jax.ShapeDtypeStruct((2, 8, 8, 3), jnp.float32)
  with pytest.raises(ValueError, match='no residual blocks'):
    jax.eval_shape(lambda v, x: model.apply(v, x, train=False, branch_scale=jnp.ones((3,))),
                   var, x)


def test_num_blocks():
  assert models.create('resnet8', 10).num_blocks == 3
  assert models.create('resnet110', 10).num_blocks == 54
  assert models.create('wrn_40_2', 10).num_blocks == 18
  assert models.create('resnet50_cifar', 10).num_blocks == 16
  assert models.create('resnet18', 10).num_blocks == 8


def test_survival_probs():
  np.testing.assert_allclose(models.survival_probs(4, 0.5), [0.875, 0.75, 0.625, 0.5])
  np.testing.assert_allclose(models.survival_probs(3, 1.0), [1.0, 1.0, 1.0])
  assert models.survival_probs(54).shape == (54,)


# ---------------------------------------------------------------- registry

def test_unknown_name_lists_known_names():
  with pytest.raises(ValueError, match='resnet8x4') as e:
    models.create('resnet8x5', 10)
  assert 'Did you mean' in str(e.value) and 'wrn_40_2' in str(e.value)
  with pytest.raises(ValueError, match='Unknown model'):
    models.create('alexnet', 10)


def test_wrn_parsing():
  with pytest.raises(ValueError, match='6n\\+4'):
    models.create('wrn_41_2', 10)
  m = models.create('wrn_22_3', 10)   # not listed, but valid
  assert m.num_blocks == 9
  _, var, _ = _abstract('wrn_22_3', size=8, num_classes=10)
  assert models.param_count(var) > 0


def test_generic_cifar_resnet_and_overrides():
  assert models.create('resnet38', 10).num_blocks == 18
  assert models.create('resnet50', 10).block == 'bottleneck'   # the ImageNet name wins
  _, var, (_, feats) = _abstract('mobilenetv2', size=32, num_classes=100)
  m = models.create('mobilenetv2', 100, width_mult=1.0)
  f = jax.eval_shape(lambda x: m.init_with_output(jax.random.key(0), x, train=False)[0][1],
                     jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32))
  assert f['stem'].shape[-1] == 32 and feats['stem'].shape[-1] == 16
  with pytest.raises(ValueError, match='bad overrides'):
    models.create('resnet8', 10, width_mult=2.0)


def test_resnet50_basic_is_self_guidance_cifar_resnet50():
  """Seed 001's CIFAR ResNet-50: 6n+2 basic blocks, n = 8, 0.76M parameters (10 classes)."""
  m = models.create('resnet50_basic', 10)
  v = jax.eval_shape(lambda: m.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False))
  assert models.param_count(v) == 758_554 and m.num_blocks == 24


def test_resnet10_cifar_count_by_hand():
  """RD resnetv2 with [1, 1, 1, 1] BasicBlocks, widths 64..512, 100 classes: 4,949,412 (4.95M).

  stem conv 3*9*64 + bn 2*64; stage 1 (64 -> 64, identity): 2 * 64*64*9 + 2 * 2*64; stage
  s > 1 (c -> 2c, stride 2): c*2c*9 + 2c*2c*9 + c*2c (1x1 shortcut) + 3 BN * 2 * 2c;
  head 512 * 100 + 100.
  """
  stem = 3 * 9 * 64 + 2 * 64
  stage1 = 2 * 64 * 64 * 9 + 2 * 2 * 64
  down = lambda c: c * 2 * c * 9 + 2 * c * 2 * c * 9 + c * 2 * c + 3 * 2 * 2 * c  # noqa: E731
  head = 512 * 100 + 100
  assert stem + stage1 + down(64) + down(128) + down(256) + head == 4_949_412
  _, var, _ = _abstract('resnet10_cifar')
  assert models.param_count(var) == 4_949_412
  assert models.create('resnet10_cifar', 100).num_blocks == 4


def test_mobilenetv1_cifar_count_by_hand_and_ie_init():
  """IE-KD mobilenet: stem 3x3/1 3 -> 32, 13 dw-separable layers, strides 2 at layers 4 and 6.

  Each layer i -> o: dw 9i + BN 2i + pw i*o + BN 2o. With 1000 classes it equals the
  ImageNet mobilenetv1 (same widths), 4,231,976.
  """
  widths = [32, 64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024]
  body = 3 * 9 * 32 + 2 * 32 + sum(9 * i + 2 * i + i * o + 2 * o
                                   for i, o in zip(widths[:-1], widths[1:]))
  assert body + 1024 * 100 + 100 == 3_309_476
  model, var, (_, feats) = _abstract('mobilenetv1_cifar')
  assert models.param_count(var) == 3_309_476
  assert body + 1024 * 1000 + 1000 == PARAMS['mobilenetv1'][0]   # the ImageNet widths
  assert feats['last_map'].shape == (2, 8, 8, 1024)
  v = jax.jit(lambda x: model.init(jax.random.key(0), x, train=False))(jnp.zeros((1, 8, 8, 3)))
  v = v['params']
  dw = np.asarray(v['layer13']['dw_conv']['kernel'])      # 1024 x 9 draws of N(0, 2/9)
  assert abs(dw.std() - np.sqrt(2 / 9)) < 0.02
  head = np.asarray(v['head']['kernel'])
  assert abs(head.std() - 0.01) < 0.001 and not np.asarray(v['head']['bias']).any()
