"""ReviewKD: HCL against a float64 numpy reference, the ABF chain against a numpy
forward pass, parameter counts from the reference ABF definition, warm-up."""

import dataclasses
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from kdjax.distill import api
from kdjax.distill.methods import reviewkd as R


def rand(seed, *shape):
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def np_adaptive_pool(x, out):
  """torch adaptive_avg_pool2d on NHWC with explicit bins."""
  n, h, w, c = x.shape
  y = np.zeros((n, out, out, c))
  for i in range(out):
    h0, h1 = math.floor(i * h / out), math.ceil((i + 1) * h / out)
    for j in range(out):
      w0, w1 = math.floor(j * w / out), math.ceil((j + 1) * w / out)
      y[:, i, j] = x[:, h0:h1, w0:w1].mean(axis=(1, 2))
  return y


def np_hcl(fs_list, ft_list):
  total = 0.0
  for fs, ft in zip(fs_list, ft_list):
    fs, ft = np.float64(fs), np.float64(ft)
    loss, cnt, tot = np.mean((fs - ft) ** 2), 1.0, 1.0
    for lvl in (4, 2, 1):
      if lvl >= fs.shape[1]:
        continue
      cnt /= 2
      loss += np.mean((np_adaptive_pool(fs, lvl) - np_adaptive_pool(ft, lvl)) ** 2) * cnt
      tot += cnt
    total += loss / tot
  return total


def test_hcl_hand_value_and_reference():
  # A 1x1 map has no pyramid: HCL is the plain MSE, (1^2 + 3^2) / 2 = 5.
  s = np.array([[[[1.0, 3.0]]]], np.float32)
  np.testing.assert_allclose(float(R.hcl_loss([s], [np.zeros_like(s)])), 5.0, rtol=1e-6)
  chex.clear_trace_counter()
  f = jax.jit(chex.assert_max_traces(R.hcl_loss, n=1))
  for seed in (0, 5):
    fs = [rand(seed, 2, 8, 8, 3), rand(seed + 1, 2, 5, 5, 4), rand(seed + 2, 2, 1, 1, 6)]
    ft = [rand(seed + 3, *x.shape) for x in fs]
    np.testing.assert_allclose(float(f(fs, ft)), np_hcl(fs, ft), rtol=2e-5)


def test_hcl_zero_at_equal_and_no_teacher_gradient():
  fs, ft = [rand(0, 2, 4, 4, 3)], [rand(1, 2, 4, 4, 3)]
  assert float(R.hcl_loss(ft, ft)) == 0.0
  g_s, g_t = jax.jit(jax.grad(R.hcl_loss, argnums=(0, 1)))(fs, ft)
  assert np.abs(np.asarray(g_s[0])).max() > 0 and np.all(np.asarray(g_t[0]) == 0)


def test_nearest_resize_is_torch_nearest():
  x = np.arange(3 * 5, dtype=np.float32).reshape(1, 3, 5, 1)
  got = np.asarray(R.nearest_resize(jnp.asarray(x), (7, 2)))[0, :, :, 0]
  # torch 'nearest': source index floor(i * in / out).
  rows, cols = [0, 0, 0, 1, 1, 2, 2], [0, 2]
  np.testing.assert_array_equal(got, x[0, :, :, 0][np.ix_(rows, cols)])


def test_warmup_ramp():
  ramp = lambda p: float(R.warmup_ramp(jnp.asarray(p), 20.0))
  assert ramp(0.0) == pytest.approx(1 / 20) and ramp(5.2) == pytest.approx(6 / 20)
  assert ramp(19.0) == 1.0 and ramp(150.0) == 1.0
  assert float(R.warmup_ramp(jnp.asarray(0.0), 0.0)) == 1.0


# ----------------------------------------------------------------------------
# Modules

def cifar_shapes(widths, spatial=(32, 16, 8), batch=2, classes=100):
  sds = lambda *s: jax.ShapeDtypeStruct((batch,) + s, jnp.float32)
  shapes = {'stem': sds(spatial[0], spatial[0], 16), 'pooled': sds(widths[-1]),
            'logits': sds(classes)}
  for i, (c, h) in enumerate(zip(widths, spatial), 1):
    shapes[f'stage{i}'] = shapes[f'stage{i}_preact'] = sds(h, h, c)
  return shapes


def abf_param_count(c_in, mid, c_out, fuse):
  """Trainable parameters of the reference ABF: conv1x1 (no bias) + BN, conv3x3 (no bias)
  + BN, and when fusing the attention conv1x1(2 mid -> 2) with bias."""
  n = c_in * mid + 2 * mid + 9 * mid * c_out + 2 * c_out
  return n + (2 * mid * 2 + 2 if fuse else 0)


def count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


@pytest.mark.parametrize('student,teacher,expected', [
    # resnet56 -> resnet20: in = out = [16, 32, 64, 64], mid 64.
    ((16, 32, 64), (16, 32, 64), 114278),
    # wrn_40_2 -> wrn_16_2: in = [32, 64, 128, 128], out = [32, 64, 128, 128], mid 128.
    ((32, 64, 128), (32, 64, 128), None),
])
def test_abf_parameter_counts_match_reference(student, teacher, expected):
  info = api.BuildInfo(cifar_shapes(student), cifar_shapes(teacher), 100, 100)
  term = R.build_reviewkd(info)
  ctx = api.example_context(info)
  aux = jax.eval_shape(lambda key: term.init(key, ctx), jax.random.key(0))
  ins, outs = list(student) + [student[-1]], list(teacher) + [teacher[-1]]
  mid = min(512, ins[-1])
  ref = sum(abf_param_count(i, mid, o, k < 3) for k, (i, o) in enumerate(zip(ins, outs)))
  assert count(aux['params']) == ref
  if expected is not None:
    assert ref == expected
  # BN running statistics are state, not parameters (as the reference's buffers).
  assert count(aux['batch_stats']) == sum(2 * mid + 2 * o for o in outs)


def np_conv(x, k, pad):
  """NHWC conv, stride 1, kernel [kh, kw, cin, cout], symmetric zero padding."""
  x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  kh, kw = k.shape[:2]
  h, w = x.shape[1] - kh + 1, x.shape[2] - kw + 1
  out = np.zeros((x.shape[0], h, w, k.shape[-1]))
  for i in range(kh):
    for j in range(kw):
      out += np.einsum('nhwc,cd->nhwd', x[:, i:i + h, j:j + w], k[i, j])
  return out


def np_nearest(x, h, w):
  ih = (np.arange(h) * x.shape[1]) // h
  iw = (np.arange(w) * x.shape[2]) // w
  return x[:, ih][:, :, iw]


def test_fusion_matches_numpy_forward():
  # Two levels: a 4x4 student map fused with the pooled vector, to teacher sizes 8x8 / 1x1.
  fusion = R.ReviewFusion(mid_channels=3, out_channels=(2, 5), out_hw=((8, 8), (1, 1)))
  feats = [rand(0, 2, 4, 4, 6), rand(1, 2, 1, 1, 3)]
  v = jax.jit(fusion.init)(jax.random.key(1), feats)
  outs = jax.jit(fusion.apply)(v, feats)  # eval mode: BN with running stats (0, 1)
  p = jax.tree.map(lambda a: np.float64(a), v['params'])
  bn = lambda x, q: x / np.sqrt(1 + 1e-5) * q['scale'] + q['bias']

  def abf(x, res, out_hw, q, fuse):
    x = bn(np_conv(np.float64(x), q['conv1']['kernel'], 0), q['bn1'])
    if fuse:
      y = np_nearest(res, *x.shape[1:3])
      z = np_conv(np.concatenate([x, y], -1), q['att_conv']['kernel'], 0) + q['att_conv']['bias']
      z = 1 / (1 + np.exp(-z))
      x = x * z[..., :1] + y * z[..., 1:]
    x = np_nearest(x, *out_hw)
    return bn(np_conv(x, q['conv2']['kernel'], 1), q['bn2']), x
  o1, r1 = abf(feats[1], None, (1, 1), p['abf1'], False)
  o0, _ = abf(feats[0], r1, (8, 8), p['abf0'], True)
  np.testing.assert_allclose(np.asarray(outs[1]), o1, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(np.asarray(outs[0]), o0, rtol=1e-4, atol=1e-5)


def test_term_trains_bn_and_checks_shapes():
  info = api.BuildInfo(cifar_shapes((16, 32, 64), spatial=(8, 4, 2)),
                       cifar_shapes((32, 64, 128), spatial=(8, 4, 2)), 100, 100)
  term = R.build_reviewkd(info, weight=0.6)
  ctx = api.example_context(info)
  aux = jax.jit(lambda key: term.init(key, ctx))(jax.random.key(0))
  feats = lambda shapes, s: {k: jnp.asarray(rand(s + i, *v.shape))
                             for i, (k, v) in enumerate(shapes.items())}
  ctx = dataclasses.replace(ctx, student=feats(info.student_shapes, 0),
                            teacher=feats(info.teacher_shapes, 50), train=True,
                            progress=jnp.asarray(1.5))
  value, metrics, new_state = jax.jit(lambda a: term.loss(a, ctx))(aux)
  assert np.isfinite(float(value)) and float(metrics['warmup']) == pytest.approx(2 / 20)
  np.testing.assert_allclose(float(value), 0.1 * float(metrics['hcl']), rtol=1e-6)
  changed = jax.tree.map(lambda a, b: bool(np.any(np.asarray(a) != np.asarray(b))),
                         aux['batch_stats'], new_state['batch_stats'])
  assert all(jax.tree.leaves(changed))
  with pytest.raises(ValueError, match='same number'):
    R.build_reviewkd(info, student_features=['stage1', 'stage2'])
  with pytest.raises(ValueError, match='shallow'):
    R.build_reviewkd(info, student_features=['stage2', 'stage1'],
                     teacher_features=['stage2', 'stage1'])


# ----------------------------------------------------------------------------
# ReviewKD + IPWD (per-sample weighting of HCL)

def test_weighted_hcl_is_the_weighted_mean_of_per_sample_hcl():
  fs = [rand(0, 3, 4, 4, 2), rand(1, 3, 1, 1, 5)]
  ft = [rand(2, 3, 4, 4, 2), rand(3, 3, 1, 1, 5)]
  per = np.array([np_hcl([f[n:n + 1] for f in fs], [f[n:n + 1] for f in ft]) for n in range(3)])
  np.testing.assert_allclose(np.asarray(R.hcl_per_sample(fs, ft)), per, rtol=2e-5)
  w = np.array([0.5, 2.0, 0.5], np.float32)
  np.testing.assert_allclose(float(R.hcl_loss(fs, ft, jnp.asarray(w))), np.mean(w * per),
                             rtol=2e-5)
  np.testing.assert_allclose(float(R.hcl_loss(fs, ft, jnp.ones(3))), float(R.hcl_loss(fs, ft)),
                             rtol=1e-6)


@pytest.mark.slow
def test_reviewkd_ipw_option_weights_samples_and_trains_its_head():
  from kdjax.distill.methods import ipwd as ipwd_losses
  info = api.BuildInfo(cifar_shapes((16, 32, 64), spatial=(8, 4, 2), classes=10),
                       cifar_shapes((16, 32, 64), spatial=(8, 4, 2), classes=10), 10, 100)
  term = R.build_reviewkd(info, ipw=True, warmup_epochs=0.0)
  ctx = api.example_context(info)
  aux = jax.jit(lambda key: term.init(key, ctx))(jax.random.key(0))
  assert aux['params']['ipw_head']['fc']['kernel'].shape == (64, 10)
  feats = lambda shapes, s: {k: jnp.asarray(rand(s + i, *v.shape))
                             for i, (k, v) in enumerate(shapes.items())}
  ctx = dataclasses.replace(ctx, student=feats(info.student_shapes, 0),
                            teacher=feats(info.teacher_shapes, 50),
                            labels=jnp.asarray([1, 7], jnp.int32))
  value, metrics, _ = jax.jit(lambda a: term.loss(a, ctx))(aux)
  # Recompute: the fusion outputs weighted by IPWD's w, plus the head's CE.
  plain = R.build_reviewkd(info, warmup_epochs=0.0)
  outs = R.ReviewFusion(64, (16, 32, 64, 64), ((8, 8), (4, 4), (2, 2), (1, 1))).apply(
      {'params': aux['params']['fusion'], 'batch_stats': aux['batch_stats']['fusion']},
      [R.as_map(ctx.student[k]) for k in ('stage1', 'stage2', 'stage3', 'pooled')])
  z_cls = ctx.student['pooled'] @ aux['params']['ipw_head']['fc']['kernel'] + \
      aux['params']['ipw_head']['fc']['bias']
  w = ipwd_losses.ipw_weights(ctx.student['logits'], z_cls, ctx.labels)
  teacher = [R.as_map(ctx.teacher[k]) for k in
             ('stage1_preact', 'stage2_preact', 'stage3_preact', 'pooled')]
  ce = optax.softmax_cross_entropy_with_integer_labels(z_cls, ctx.labels).mean()
  np.testing.assert_allclose(float(value), float(R.hcl_loss(outs, teacher, w) + ce), rtol=1e-5)
  assert plain.init is not None and 'ce_cls' in metrics
  with pytest.raises(ValueError, match='estimator must be one of'):
    R.build_reviewkd(info, ipw=True, ipw_estimator='nope')
