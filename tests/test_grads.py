"""kdjax.models.grads: the hand-written BN and strided-conv gradients equal autodiff of the formulas."""

import os
import re
import subprocess
import sys
import textwrap

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from kdjax import models
from kdjax.models import common, grads


def _plain_bn(x, scale, bias, eps):
  """The two-pass formula, differentiated by JAX (the definition the custom VJP must match)."""
  axes = tuple(range(x.ndim - 1))
  mean = jnp.mean(x, axes)
  var = jnp.mean(jnp.square(x - mean), axes)
  return (x - mean) * (lax.rsqrt(var + eps) * scale) + bias, mean, var


@pytest.mark.parametrize('offset', [0.0, 1000.0])
def test_batch_norm_train_gradients_match_float64_autodiff(offset):
  # offset 1000: a channel mean ~1000x its spread, where E[x^2] - E[x]^2 would lose every digit.
  rng = np.random.default_rng(0)
  x = (rng.normal(size=(4, 5, 3, 6)) + offset).astype(np.float32)
  scale = rng.uniform(0.5, 2, 6).astype(np.float32)
  bias = rng.normal(size=6).astype(np.float32)
  # Cotangents for all three outputs, so the statistics' terms are checked too.
  gy, gm, gv = (rng.normal(size=s).astype(np.float32) for s in (x.shape, (6,), (6,)))

  def loss(fn, *args):
    y, m, v = fn(*args, 1e-5)
    return jnp.sum(y * gy) + jnp.sum(m * gm) + jnp.sum(v * gv)

  got = jax.grad(lambda *a: loss(grads.batch_norm_train, *a), argnums=(0, 1, 2))(x, scale, bias)
  with jax.enable_x64(True):
    want = jax.grad(lambda *a: loss(_plain_bn, *a), argnums=(0, 1, 2))(
        *(jnp.asarray(a, jnp.float64) for a in (x, scale, bias)))
  for g, w, name in zip(got, want, ('x', 'scale', 'bias')):
    np.testing.assert_allclose(g, w, rtol=2e-4, atol=2e-5 * float(np.max(np.abs(w))), err_msg=name)
  y, m, v = grads.batch_norm_train(x, scale, bias, 1e-5)
  yr, mr, vr = _plain_bn(x, scale, bias, 1e-5)
  np.testing.assert_array_equal(y, yr)      # the forward is the formula, op for op
  np.testing.assert_array_equal(m, mr)
  np.testing.assert_array_equal(v, vr)


def test_batch_norm_module_train_grads_are_the_formulas():
  rng = np.random.default_rng(1)
  bn = common.BatchNorm(use_running_average=False)
  x = jnp.asarray(rng.normal(2.0, 3.0, (8, 4, 4, 5)), jnp.float32)
  v = bn.init(jax.random.key(0), x)
  params = {'scale': jnp.asarray(rng.uniform(0.5, 2, 5), jnp.float32),
            'bias': jnp.asarray(rng.normal(size=5), jnp.float32)}
  w = jnp.asarray(rng.normal(size=x.shape), jnp.float32)

  def module_loss(p, x):
    y, _ = bn.apply({'params': p, 'batch_stats': v['batch_stats']}, x, mutable=['batch_stats'])
    return jnp.sum(jnp.tanh(y) * w)

  def formula_loss(p, x):
    return jnp.sum(jnp.tanh(_plain_bn(x, p['scale'], p['bias'], 1e-5)[0]) * w)

  got = jax.grad(module_loss, argnums=(0, 1))(params, x)
  want = jax.grad(formula_loss, argnums=(0, 1))(params, x)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), got, want)


CONVS = [  # (H, W, C, O, kernel, stride, padding)
    (32, 32, 8, 16, 3, 2, 1),    # resnet's stride-2 3x3
    (16, 16, 8, 16, 1, 2, 0),    # its 1x1 shortcut: residues no tap reaches
    (15, 13, 4, 6, 3, 2, 1),     # odd sizes
    (17, 17, 4, 4, 5, 2, 2),
    (19, 20, 3, 5, 3, 3, 1),     # stride 3
    (12, 12, 4, 4, 3, 2, (0, 1)),  # asymmetric padding
]


@pytest.mark.parametrize('h,w,c,o,k,s,p', CONVS)
def test_polyphase_input_gradient_equals_lax(h, w, c, o, k, s, p):
  rng = np.random.default_rng(h * w + k)
  x = jnp.asarray(rng.normal(size=(2, h, w, c)), jnp.float32)
  kern = jnp.asarray(rng.normal(size=(k, k, c, o)), jnp.float32)
  pad = (p, p) if isinstance(p, int) else p
  conv = lambda x_, k_: lax.conv_general_dilated(x_, k_, (s, s), (pad, pad),
                                                 dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  y, vjp = jax.vjp(conv, x, kern)
  dy = jnp.asarray(rng.normal(size=y.shape), jnp.float32)
  want_dx, want_dw = vjp(dy)
  got = grads.polyphase_input_grad(dy, kern, x.shape, (s, s), (pad, pad))
  np.testing.assert_allclose(got, want_dx, rtol=1e-5, atol=1e-5 * float(jnp.max(jnp.abs(want_dx))))
  # Through the drop-in conv (the path nn.Conv takes): same forward, same two gradients.
  mine = lambda x_, k_: grads.conv_general_dilated(x_, k_, (s, s), (pad, pad),
                                                   dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  y2, vjp2 = jax.vjp(mine, x, kern)
  np.testing.assert_array_equal(y2, y)
  dx2, dw2 = vjp2(dy)
  np.testing.assert_allclose(dx2, want_dx, rtol=1e-5, atol=1e-5 * float(jnp.max(jnp.abs(want_dx))))
  np.testing.assert_array_equal(dw2, want_dw)


def test_cpu_strided_conv_gradient_has_no_dilated_input_conv():
  # The point of the polyphase form: no `lhs_dilate` (s*s times the work on XLA:CPU) is left.
  assert jax.default_backend() == 'cpu'
  x = jnp.zeros((2, 8, 8, 4))
  kern = jnp.zeros((3, 3, 4, 8))

  def hlo(conv):
    f = lambda x_, k_: jnp.sum(conv(x_, k_, (2, 2), ((1, 1), (1, 1)),
                                    dimension_numbers=('NHWC', 'HWIO', 'NHWC')) ** 2)
    return jax.jit(jax.grad(f)).lower(x, kern).as_text()
  assert 'lhs_dilate = [2, 2]' in hlo(lax.conv_general_dilated)
  assert 'lhs_dilate = [2, 2]' not in hlo(grads.conv_general_dilated)


def test_stride_one_grouped_and_string_padding_convs_give_lax_values():
  # Stride-1 gradients are written as the convs XLA itself makes of lax's transposes, and
  # grouped convs keep lax's backward: values, dx and dw equal lax's bit for bit.
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.normal(size=(2, 6, 6, 4)), jnp.float32)
  for args, kw in [(((1, 1), ((1, 1), (1, 1))), {}),                    # stride 1
                   (((1, 1), ((0, 2), (1, 0))), {}),                    # asymmetric padding
                   (((1, 1), 'SAME'), {}),                              # string padding
                   (((2, 2), ((1, 1), (1, 1))), {'feature_group_count': 2})]:  # grouped
    kern = jnp.asarray(rng.normal(size=(3, 3, 4 // kw.get('feature_group_count', 1), 4)), jnp.float32)
    f = lambda conv: (lambda x_, k_: conv(jnp.maximum(x_, 0.), k_, *args,
                                          dimension_numbers=('NHWC', 'HWIO', 'NHWC'), **kw))
    y, vjp = jax.vjp(f(grads.conv_general_dilated), x, kern)
    want_y, want_vjp = jax.vjp(f(lax.conv_general_dilated), x, kern)
    np.testing.assert_array_equal(y, want_y)
    dy = jnp.asarray(rng.normal(size=y.shape), jnp.float32)
    for got, want in zip(jax.jit(vjp)(dy), jax.jit(want_vjp)(dy)):
      np.testing.assert_array_equal(got, want, err_msg=str(args))


def test_strided_string_padding_takes_the_explicit_padding_path():
  # 'SAME' with stride 2 pads (0, 1): its gradients are those of the explicit padding (the
  # polyphase input gradient), and agree with lax's to float32 rounding.
  rng = np.random.default_rng(6)
  x = jnp.asarray(rng.normal(size=(2, 6, 6, 4)), jnp.float32)
  kern = jnp.asarray(rng.normal(size=(3, 3, 4, 5)), jnp.float32)
  dn = ('NHWC', 'HWIO', 'NHWC')
  grads_of = lambda conv, pad: jax.jit(jax.grad(
      lambda x_, k_: jnp.sum(jnp.sin(conv(x_, k_, (2, 2), pad, dimension_numbers=dn))), (0, 1)))
  same = grads_of(grads.conv_general_dilated, 'SAME')(x, kern)
  explicit = grads_of(grads.conv_general_dilated, ((0, 1), (0, 1)))(x, kern)
  reference = grads_of(lax.conv_general_dilated, 'SAME')(x, kern)
  for a, b, c in zip(same, explicit, reference):
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-5)


def test_conv_gradients_inside_a_loop_are_plain_convs():
  # XLA:CPU leaves lax's transposed convs (kernel 01oi, input f01b) unrewritten inside a
  # while loop and runs them 3-100x slower; the written-out gradients have only NHWC/HWIO convs.
  x = jnp.ones((2, 8, 8, 4))
  kern = jnp.ones((3, 3, 4, 4))

  def loop_of(conv, stride):
    def body(_, k_):
      return k_ - 1e-3 * jax.grad(lambda k2: jnp.sum(conv(
          x, k2, (stride, stride), ((1, 1), (1, 1)), dimension_numbers=('NHWC', 'HWIO', 'NHWC')) ** 2))(k_)
    return jax.jit(lambda k_, n: lax.fori_loop(0, n, body, k_)).lower(kern, 1).compile().as_text()

  for stride in (1, 2):
    labels = set(re.findall(r'dim_labels=(\S+?),', loop_of(grads.conv_general_dilated, stride)))
    assert labels == {'b01f_01io->b01f'}, labels
  assert len(set(re.findall(r'dim_labels=(\S+?),', loop_of(lax.conv_general_dilated, 1)))) > 1


def test_cpu_conv_saves_a_materialised_input():
  # Without the conditional XLA fuses the input's producer (here a ReLU) into the filter
  # gradient's transposing copy (68 ms vs 8 for a ResNet block's BN + add + ReLU). The
  # conditional must survive XLA's simplifier, in the compiled program, only under grad.
  x = jnp.ones((2, 8, 8, 4))
  kern = jnp.ones((3, 3, 4, 4))
  conv = lambda x_, k_: grads.conv_general_dilated(jnp.maximum(x_, 0.), k_, (1, 1), ((1, 1), (1, 1)),
                                                   dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  compiled = lambda f: jax.jit(f).lower(x, kern).compile().as_text()
  assert ' conditional(' in compiled(jax.grad(lambda x_, k_: jnp.sum(conv(x_, k_) ** 2), (0, 1)))
  assert ' conditional(' not in compiled(conv)


@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16, jnp.float16])
def test_materialize_is_the_identity(dtype):
  # The predicate is true for every bit pattern of the key's first element: zeros, -0, NaN, inf.
  x = jnp.asarray([[1.0, 2.0], [np.nan, -3.0]], dtype)
  for first in (0.0, -0.0, np.nan, -np.inf, 1.5):
    key = jnp.asarray([first, 2.0], dtype)
    np.testing.assert_array_equal(jax.jit(grads.materialize)(x, key), x)
    np.testing.assert_array_equal(jax.jit(grads.materialize)(x, key.astype(jnp.float32)), x)


def test_materialize_survives_vmap():
  # Seed groups vmap the whole step: a batched predicate would become a select, which XLA
  # fuses through. The vmap rule keeps one conditional, and the gradients stay lax's exactly.
  rng = np.random.default_rng(4)
  x = jnp.asarray(rng.normal(size=(3, 2, 6, 6, 4)), jnp.float32)
  kern = jnp.asarray(rng.normal(size=(3, 3, 3, 4, 4)), jnp.float32)
  loss = lambda conv: (lambda k_, x_: jnp.sum(conv(jnp.maximum(x_, 0.), k_, (1, 1), ((1, 1), (1, 1)),
                                                    dimension_numbers=('NHWC', 'HWIO', 'NHWC')) ** 2))
  got = jax.jit(jax.vmap(jax.grad(loss(grads.conv_general_dilated), (0, 1))))
  assert ' conditional(' in got.lower(kern, x).compile().as_text()
  # Each seed's gradients are exactly a single run's (per_weight: one conv per seed).
  one = jax.jit(jax.grad(loss(lax.conv_general_dilated), (0, 1)))
  want = [np.stack(g) for g in zip(*[one(kern[i], x[i]) for i in range(3)])]
  for g, w in zip(got(kern, x), want):
    np.testing.assert_array_equal(g, w)
  # Unbatched x with batched weights (and the reverse) keep their batching.
  assert grads.materialize(x[0], kern).shape == x[0].shape
  assert jax.vmap(grads.materialize, (0, None))(x, kern[0]).shape == x.shape


@pytest.mark.parametrize('stride', [1, 2])
def test_vmapped_weights_run_one_conv_per_seed(stride):
  # Seed groups: batched weights must not become one grouped conv (1.3-1.6x slower on
  # XLA:CPU); a weight shared by the vmapped rows (the teacher) folds them into the batch.
  rng = np.random.default_rng(5)
  x = jnp.asarray(rng.normal(size=(3, 2, 6, 6, 4)), jnp.float32)
  kern = jnp.asarray(rng.normal(size=(3, 3, 3, 4, 8)), jnp.float32)
  conv = lambda x_, k_: grads.conv_general_dilated(x_, k_, (stride, stride), ((1, 1), (1, 1)),
                                                   dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  loss = lambda k_, x_: jnp.sum(conv(x_, k_) ** 2)
  ref = lambda x_, k_: lax.conv_general_dilated(x_, k_, (stride, stride), ((1, 1), (1, 1)),
                                                dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  for fn, args in [(jax.vmap(conv), (x, kern)), (jax.vmap(jax.grad(loss, (0, 1))), (kern, x))]:
    text = jax.jit(fn).lower(*args).compile().as_text()
    assert 'convolution(' in text and 'feature_group_count' not in text, text[:2000]
  np.testing.assert_array_equal(jax.jit(jax.vmap(conv))(x, kern),
                                np.stack([ref(x[i], kern[i]) for i in range(3)]))
  shared = jax.jit(jax.vmap(conv, (0, None)))
  text = shared.lower(x, kern[0]).compile().as_text()
  assert 'f32[6,' in text and 'feature_group_count' not in text   # 3 x 2 rows in one conv
  np.testing.assert_allclose(shared(x, kern[0]), np.stack([ref(x[i], kern[0]) for i in range(3)]),
                             rtol=1e-6, atol=1e-5)


_SHARDED = textwrap.dedent('''
    import re
    import kdjax, jax, jax.numpy as jnp, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from kdjax.models import grads
    mesh = Mesh(np.array(jax.devices()), ('data',))
    loss = lambda w, x: jnp.sum(grads.conv_general_dilated(
        jnp.maximum(x, 0.), w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=('NHWC', 'HWIO', 'NHWC')) ** 2)
    f = jax.jit(jax.grad(loss), in_shardings=(NamedSharding(mesh, P()), NamedSharding(mesh, P('data'))))
    text = f.lower(jnp.ones((3, 3, 4, 8)), jnp.ones((4, 6, 6, 4))).compile().as_text()
    assert ' conditional(' in text
    print(sorted(re.findall(r'= (\\S+) all-reduce\\(', text)))
''')


def test_materialize_needs_no_cross_device_read():
  # The predicate reads the (replicated) weight: with x sharded over 2 devices, the only
  # all-reduce left is the filter gradient's, none for a scalar of x's first element.
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=2', JAX_PLATFORMS='cpu')
  out = subprocess.run([sys.executable, '-c', _SHARDED], env=env, capture_output=True, text=True,
                       timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  # One all-reduce, of the filter gradient's 3 * 3 * 4 * 8 entries (in some dimension order).
  reduced = eval(out.stdout.strip().splitlines()[-1])
  assert len(reduced) == 1 and sorted(re.findall(r'\d+', reduced[0].split(']')[0][4:])) == ['3', '3', '4', '8'], reduced


@pytest.mark.slow
def test_resnet_gradients_unchanged_by_the_custom_vjps():
  # A whole zoo model in train mode: grads with the hand-written VJPs (the default) equal
  # grads of the same model built with lax's conv and the plain BN formula.
  model = models.create('resnet8', 10)
  x = jnp.asarray(np.random.default_rng(2).normal(size=(4, 16, 16, 3)), jnp.float32)
  v = model.init(jax.random.key(0), x, train=False)

  def loss(params):
    (logits, _), _ = model.apply({'params': params, 'batch_stats': v['batch_stats']}, x,
                                 train=True, mutable=['batch_stats'])
    return jnp.sum(jax.nn.log_softmax(logits)[:, 0])

  got = jax.grad(loss)(v['params'])
  orig_conv, orig_bn = grads.conv_general_dilated, grads.batch_norm_train
  try:
    grads.conv_general_dilated = lax.conv_general_dilated   # read when nn.Conv is built
    grads.batch_norm_train = _plain_bn
    want = jax.grad(loss)(v['params'])
  finally:
    grads.conv_general_dilated, grads.batch_norm_train = orig_conv, orig_bn
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-6), got, want)


@pytest.mark.parametrize('stride,padding,size', [
    (1, ((1, 1), (1, 1)), 7), (2, ((0, 1), (2, 0)), 6), (1, 'SAME', 5),
    pytest.param(2, ((1, 1), (1, 1)), 7, marks=pytest.mark.slow),
    pytest.param(2, ((1, 1), (1, 1)), 8, marks=pytest.mark.slow)])
def test_depthwise_conv_matches_lax(stride, padding, size):
  # CPU depthwise convs are kh*kw shifted multiply-adds (XLA:CPU's grouped conv took 282 ms
  # for a forward that this does in 8): the same sums in another order, with their VJP.
  rng = np.random.default_rng(7)
  x = jnp.asarray(rng.normal(size=(2, size, size, 5)), jnp.float32)
  kern = jnp.asarray(rng.normal(size=(3, 3, 1, 5)), jnp.float32)
  f = lambda conv: (lambda x_, k_: conv(x_, k_, (stride, stride), padding, feature_group_count=5,
                                        dimension_numbers=('NHWC', 'HWIO', 'NHWC')))
  y, vjp = jax.vjp(f(grads.conv_general_dilated), x, kern)
  want_y, want_vjp = jax.vjp(f(lax.conv_general_dilated), x, kern)
  np.testing.assert_allclose(y, want_y, rtol=1e-5, atol=1e-5)
  dy = jnp.asarray(rng.normal(size=y.shape), jnp.float32)
  for got, want in zip(vjp(dy), want_vjp(dy)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  text = jax.jit(jax.grad(lambda x_, k_: jnp.sum(f(grads.conv_general_dilated)(x_, k_) ** 2), (0, 1))
                 ).lower(x, kern).compile().as_text()
  assert ' convolution(' not in text


@pytest.mark.slow
def test_depthwise_and_few_group_convs_under_seed_vmap_and_bf16():
  rng = np.random.default_rng(8)
  x = jnp.asarray(rng.normal(size=(3, 2, 6, 6, 6)), jnp.float32)
  dn = ('NHWC', 'HWIO', 'NHWC')
  for groups, k in [(6, 3), (3, 1)]:   # MobileNet's depthwise, ShuffleNet's grouped 1x1
    kern = jnp.asarray(rng.normal(size=(3, k, k, 6 // groups, 6)), jnp.float32)
    f = lambda conv: (lambda k_, x_: jnp.sum(jnp.sin(conv(x_, k_, (1, 1), ((k // 2,) * 2,) * 2,
                                                          feature_group_count=groups, dimension_numbers=dn))))
    got = jax.vmap(jax.grad(f(grads.conv_general_dilated), (0, 1)))(kern, x)
    want = jax.vmap(jax.grad(f(lax.conv_general_dilated), (0, 1)))(kern, x)
    for a, b in zip(got, want):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    # bf16 inputs (config.dtype=bfloat16): close to the float32 result, dtype kept.
    y16 = grads.conv_general_dilated(x[0].astype(jnp.bfloat16), kern[0].astype(jnp.bfloat16), (1, 1),
                                     ((k // 2,) * 2,) * 2, feature_group_count=groups, dimension_numbers=dn)
    y32 = lax.conv_general_dilated(x[0], kern[0], (1, 1), ((k // 2,) * 2,) * 2,
                                   feature_group_count=groups, dimension_numbers=dn)
    assert y16.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(y16, np.float32), y32, rtol=3e-2, atol=3e-2 * float(jnp.abs(y32).max()))
  # ShuffleNet's grouped 1x1: one plain conv per group, forward values equal lax's bit for bit.
  kern = jnp.asarray(rng.normal(size=(1, 1, 2, 6)), jnp.float32)
  args = ((1, 1), ((0, 0), (0, 0)))
  np.testing.assert_array_equal(
      grads.conv_general_dilated(x[0], kern, *args, feature_group_count=3, dimension_numbers=dn),
      lax.conv_general_dilated(x[0], kern, *args, feature_group_count=3, dimension_numbers=dn))
