"""Methods with trainable modules / state: FitNet, AB, FT, VID, OFD, CC, CRD.

Module parameter counts and shapes, each loss against an independent numpy
computation, the OFD margin formula, CRD's memory update / negative sampling /
frozen normaliser, builder rejections, and every method's finite loss and
gradients under jit on realistic feature shapes.
"""

import warnings
import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kdjax import models
from kdjax.distill import api, modules
from kdjax.distill.methods import ab as ab_lib
from kdjax.distill.methods import crd as crd_lib
from kdjax.distill.methods import fitnet as fitnet_lib
from kdjax.distill.methods import ft as ft_lib
from kdjax.distill.methods import ofd as ofd_lib
from kdjax.distill.methods import vid as vid_lib
from kdjax.distill.methods.ofd import teacher_margins

RNG = np.random.RandomState(0)


def n_params(tree):
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))


def init_apply(module, x):
  @jax.jit
  def f(x):
    v = module.init(jax.random.key(0), x, train=False)
    return v, module.apply(v, x, train=False)
  return f(x)


# ----------------------------------------------------------------------------
# Modules

@pytest.mark.parametrize('s_hw,t_hw,kind,conv_params', [
    ((8, 8), (4, 4), 'stride2', 9 * 16 * 32 + 32),
    ((4, 4), (8, 8), 'transpose', 16 * 16 * 32 + 32),
    ((6, 6), (4, 4), 'valid', 9 * 16 * 32 + 32),
    ((4, 4), (4, 4), 'valid', 16 * 32 + 32),
])
def test_convreg_rules(s_hw, t_hw, kind, conv_params):
  assert modules.conv_reg_kind(s_hw, t_hw) == kind
  m = modules.ConvReg(32, s_hw, t_hw)
  v, y = init_apply(m, jnp.ones((2,) + s_hw + (16,)))
  assert y.shape == (2,) + t_hw + (32,)
  assert n_params(v['params']) == conv_params + 2 * 32  # + BN gamma, beta
  assert float(y.min()) >= 0.0  # ReLU
  v2, y2 = init_apply(modules.ConvReg(32, s_hw, t_hw, use_relu=False), jnp.ones((2,) + s_hw + (16,)))
  assert n_params(v2['params']) == conv_params + 64


def test_convreg_rejects_unmappable():
  with pytest.raises(ValueError, match='cannot map'):
    modules.conv_reg_kind((4, 4), (16, 16))


@pytest.mark.slow
def test_paraphraser_translator():
  para = ft_lib.Paraphraser(8, 0.5)
  x = jnp.ones((2, 4, 4, 8))
  v, (factor, rec) = init_apply(para, x)
  assert factor.shape == (2, 4, 4, 4) and rec.shape == (2, 4, 4, 8)
  enc = (9 * 8 * 8 + 8) + (9 * 8 * 4 + 4) + (9 * 4 * 4 + 4)
  dec = (9 * 4 * 4 + 4) + (9 * 4 * 8 + 8) + (9 * 8 * 8 + 8)
  assert n_params(v['params']) == enc + dec
  np.testing.assert_allclose(para.apply(v, x, method='encode'), factor)
  tr = ft_lib.Translator(4, use_bn=True)
  v, y = init_apply(tr, jnp.ones((2, 4, 4, 6)))
  assert y.shape == (2, 4, 4, 4)
  assert n_params(v['params']) == (9 * 6 * 6 + 6) + (9 * 6 * 4 + 4) + (9 * 4 * 4 + 4) + 2 * (6 + 4 + 4)
  v, _ = init_apply(ft_lib.Translator(4, use_bn=False), jnp.ones((2, 4, 4, 6)))
  assert 'batch_stats' not in v


def test_vid_regressor():
  m = vid_lib.VIDRegressor(8, 8, init_var=5.0)
  v, (mu, var) = init_apply(m, jnp.ones((2, 4, 4, 6)))
  assert mu.shape == (2, 4, 4, 8) and var.shape == (8,)
  assert n_params(v['params']) == 6 * 8 + 8 * 8 + 8 * 8 + 8
  np.testing.assert_allclose(var, 5.0, rtol=1e-5)


def test_ofd_connector_and_embed():
  m = ofd_lib.OFDConnector(8)
  v, y = init_apply(m, jnp.ones((2, 4, 4, 6)))
  assert y.shape == (2, 4, 4, 8) and n_params(v['params']) == 6 * 8 + 16
  np.testing.assert_array_equal(v['params']['bn']['scale'], 1.0)
  np.testing.assert_array_equal(v['params']['bn']['bias'], 0.0)
  e = modules.Embed(4, normalize=True)
  x = jnp.asarray(RNG.randn(3, 10), jnp.float32)
  v, y = init_apply(e, x)
  assert y.shape == (3, 4) and n_params(v['params']) == 10 * 4 + 4
  np.testing.assert_allclose(np.linalg.norm(y, axis=1), 1.0, rtol=1e-5)
  _, y2 = init_apply(modules.Embed(4), x)
  assert not np.allclose(np.linalg.norm(y2, axis=1), 1.0)


# ----------------------------------------------------------------------------
# Losses against numpy

def test_hint_and_ab_numpy():
  s, t = RNG.randn(2, 3, 3, 4), RNG.randn(2, 3, 3, 4)
  np.testing.assert_allclose(fitnet_lib.hint_mse(s, t), np.mean((s - t) ** 2), rtol=1e-5)
  m = 1.0
  ref = 0.0
  for a, b in zip(s.ravel(), t.ravel()):
    if a > -m and b <= 0:
      ref += (a + m) ** 2
    if a <= m and b > 0:
      ref += (a - m) ** 2
  np.testing.assert_allclose(ab_lib.ab_layer(s, t, m), ref, rtol=1e-5)
  s2 = RNG.randn(2, 2, 2, 4)
  t2 = RNG.randn(2, 2, 2, 4)
  ref_total = (0.5 * ref + 1.0 * float(ab_lib.ab_layer(s2, t2, m))) / 2 / 1000 * 3
  np.testing.assert_allclose(ab_lib.ab_loss([s, s2], [t, t2], m), ref_total, rtol=1e-5)
  # Zero where the definition implies it: s beyond the margin on the teacher's side.
  assert float(ab_lib.ab_layer(np.where(t > 0, 1.5, -1.5), t, 1.0)) == 0.0


def _margin_ref(gamma, beta):
  out = []
  for g, b in zip(gamma, beta):
    s, m = abs(g), b
    cdf = 0.5 * (1 + math.erf((-m / s) / math.sqrt(2)))
    if cdf > 0.001:
      out.append(m - s * math.exp(-(m / s) ** 2 / 2) / math.sqrt(2 * math.pi) / cdf)
    else:
      out.append(-3 * s)
  return np.array(out)


def test_ofd_margin_and_partial_l2():
  gamma = np.array([1.0, 0.5, -2.0, 0.1, 0.3])
  beta = np.array([0.0, 1.0, -1.0, 1.0, -0.2])
  np.testing.assert_allclose(ofd_lib.ofd_margin(gamma, beta), _margin_ref(gamma, beta), rtol=1e-5)
  assert abs(float(ofd_lib.ofd_margin(np.array([0.1]), np.array([1.0]))[0]) + 0.3) < 1e-6  # -3 s
  # N(0, 1): E[x | x < 0] = -sqrt(2 / pi)
  np.testing.assert_allclose(ofd_lib.ofd_margin(np.array([1.0]), np.array([0.0])),
                             [-math.sqrt(2 / math.pi)], rtol=1e-5)
  margin = _margin_ref(gamma, beta).astype(np.float32)
  s, t = RNG.randn(2, 3, 3, 5), RNG.randn(2, 3, 3, 5)
  tp = np.maximum(t, margin)
  ref = np.sum((s - tp) ** 2 * ((s > tp) | (tp > 0)))
  np.testing.assert_allclose(ofd_lib.ofd_partial_l2(s, t, margin), ref, rtol=1e-5)
  # Zero: s equals the target where t' > 0 and lies below t' elsewhere.
  s0 = np.where(tp > 0, tp, tp - 0.5)
  assert float(ofd_lib.ofd_partial_l2(s0, t, margin)) == 0.0
  # Stage weights 1/2^(n-i-1) and /N.
  s2, t2 = RNG.randn(2, 2, 2, 5), RNG.randn(2, 2, 2, 5)
  l2 = float(ofd_lib.ofd_partial_l2(s2, t2, margin))
  np.testing.assert_allclose(ofd_lib.ofd_loss([s, s2], [t, t2], [margin, margin]),
                             (ref / 2 + l2) / 2, rtol=1e-5)


def test_ofd_margins_from_teacher_params():
  params = {'layer3_0': {'bn2': {'scale': jnp.array([1.0, 0.5]), 'bias': jnp.array([0.0, 1.0])}}}
  (m,) = teacher_margins(params, [('layer3_0', 'bn2')], [2])
  np.testing.assert_allclose(m, _margin_ref([1.0, 0.5], [0.0, 1.0]), rtol=1e-5)
  with pytest.raises(ValueError, match='channels'):
    teacher_margins(params, [('layer3_0', 'bn2')], [4])


def test_vid_and_ft_numpy():
  mu, t = RNG.randn(2, 3, 3, 4), RNG.randn(2, 3, 3, 4)
  var = np.array([0.5, 1.0, 2.0, 5.0])
  ref = np.mean(0.5 * ((mu - t) ** 2 / var + np.log(var)))
  np.testing.assert_allclose(vid_lib.vid_nll(mu, var, t), ref, rtol=1e-5)
  fs, ft = RNG.randn(2, 4, 4, 3), RNG.randn(2, 4, 4, 5)

  def at(f):
    a = np.mean(f ** 2, axis=-1).reshape(2, -1)
    return a / np.linalg.norm(a, axis=1, keepdims=True)
  np.testing.assert_allclose(ft_lib.ft_factor_rd(fs, ft), np.mean(np.abs(at(fs) - at(ft))), rtol=1e-5)
  # RD pools the larger map: 4x4 -> 2x2.
  ft_big = RNG.randn(2, 8, 8, 5)
  pooled = ft_big.reshape(2, 4, 2, 4, 2, 5).mean(axis=(2, 4))
  np.testing.assert_allclose(ft_lib.ft_factor_rd(fs, ft_big), np.mean(np.abs(at(fs) - at(pooled))),
                             rtol=1e-5)
  gs, gt = RNG.randn(2, 4, 4, 3), RNG.randn(2, 4, 4, 3)

  def nrm(f):
    f = f.reshape(2, -1)
    return f / np.linalg.norm(f, axis=1, keepdims=True)
  np.testing.assert_allclose(ft_lib.ft_factor_official(gs, gt), np.mean(np.abs(nrm(gs) - nrm(gt))),
                             rtol=1e-5)
  np.testing.assert_allclose(ft_lib.ft_reconstruction(gs, gt, 'l1'), np.mean(np.abs(gs - gt)), rtol=1e-5)
  np.testing.assert_allclose(ft_lib.ft_reconstruction(gs, gt, 'mse'), np.mean((gs - gt) ** 2), rtol=1e-5)


def test_crd_nce_numpy():
  x = np.abs(RNG.randn(3, 5)) * 1e-3
  n_data, eps = 100, 1e-7
  m = 4
  pn = m / n_data
  ref = -(np.sum(np.log(x[:, 0] / (x[:, 0] + pn + eps)))
          + np.sum(np.log(pn / (x[:, 1:] + pn + eps)))) / 3
  np.testing.assert_allclose(crd_lib.crd_nce(jnp.asarray(x, jnp.float32), n_data), ref, rtol=1e-5)


def test_crd_memory_update_rule():
  mem = jnp.asarray(RNG.randn(6, 4), jnp.float32)
  v = jnp.asarray(RNG.randn(2, 4), jnp.float32)
  idx = jnp.array([1, 4])
  new = np.asarray(crd_lib.crd_memory_update(mem, idx, v, 0.5))
  for j, i in enumerate([1, 4]):
    row = 0.5 * np.asarray(mem[i]) + 0.5 * np.asarray(v[j])
    np.testing.assert_allclose(new[i], row / np.linalg.norm(row), rtol=1e-5)
  for i in (0, 2, 3, 5):
    np.testing.assert_array_equal(new[i], mem[i])


def test_crd_negative_sampling():
  labels = np.array([0, 1, 2, 0, 1, 2, 2, 2, 1, 0, 3])
  order, start, count = crd_lib.crd_class_table(labels, 4)
  assert crd_lib.crd_max_negatives(labels, 4) == 11 - 4
  anchors = jnp.array([0, 2, 3, 1])
  neg = jax.jit(crd_lib.crd_sample_negatives, static_argnums=5)(
      jax.random.key(3), anchors, jnp.asarray(order), jnp.asarray(start), jnp.asarray(count), 500)
  neg = np.asarray(neg)
  assert neg.shape == (4, 500) and neg.min() >= 0 and neg.max() < len(labels)
  for row, y in zip(neg, np.asarray(anchors)):
    assert not np.any(labels[row] == y)
    # Uniform over every other-class sample: all of them show up.
    assert set(row) == set(np.flatnonzero(labels != y))


def test_crd_negatives_from_label_bank():
  bank = jnp.array([0, 1, -1, 2, 0, -1, 1, 2, -1, 0])
  anchors = jnp.array([0, 1, 2])
  idx, valid = crd_lib.crd_sample_negatives_seen(jax.random.key(0), anchors, bank, 300)
  idx, valid = np.asarray(idx), np.asarray(valid)
  assert idx.shape == valid.shape == (3, 300) and valid.mean() > 0.9
  lab = np.asarray(bank)[idx]
  assert np.all(lab[valid] >= 0)
  assert not np.any((lab == np.asarray(anchors)[:, None]) & valid)
  x = jnp.full((3, 301), 1e-3)
  full = crd_lib.crd_nce(x, 10)
  masked = crd_lib.crd_nce(x, 10, mask=jnp.zeros((3, 300), bool))
  np.testing.assert_allclose(masked, -3 * np.log(1e-3 / (1e-3 + 30 + 1e-7)) / 3, rtol=1e-5)
  assert float(full) > float(masked)


@pytest.mark.slow
def test_crd_without_train_labels_keeps_a_label_bank():
  info, vt = build_info('resnet8x4', 'resnet8', num_train=40, classes=10, labels=False)
  (term,) = api.build_term({'method': 'crd'}, info)
  loss, g, _, aux, new = run_term(term, info, vt)
  assert np.isfinite(float(loss))
  np.testing.assert_array_equal(aux['memory']['labels'], -1)
  bank = np.asarray(new['memory']['labels'])
  np.testing.assert_array_equal(bank[[0, 3, 6, 9]], [0, 1, 2, 3])
  assert np.sum(bank >= 0) == 4


def test_crd_normalizer_frozen_after_first_call():
  scores = jnp.array([[1.0, 2.0], [3.0, 4.0]])
  z = crd_lib.crd_normalizer(jnp.array(-1.0), scores, 10)
  np.testing.assert_allclose(z, 25.0)
  np.testing.assert_allclose(crd_lib.crd_normalizer(z, scores * 7, 10), 25.0)


# ----------------------------------------------------------------------------
# Builders and terms on realistic shapes

_SHAPES = {}


def feature_shapes(arch, classes=100, hw=32):
  key = (arch, classes, hw)
  if key not in _SHAPES:
    m = models.create(arch, classes)
    x = jax.ShapeDtypeStruct((2, hw, hw, 3), jnp.float32)
    v = jax.eval_shape(lambda: m.init(jax.random.key(0), jnp.zeros((2, hw, hw, 3)), train=False))
    lg, f = jax.eval_shape(lambda v, x: m.apply(v, x, train=False), v, x)
    _SHAPES[key] = (m, v, {**f, 'logits': lg})
  return _SHAPES[key]


def build_info(teacher, student, num_train=120, classes=100, labels=True):
  mt, vt, ft = feature_shapes(teacher, classes)
  ms, _, fs = feature_shapes(student, classes)
  tl = (np.arange(num_train) % classes).astype(np.int32) if labels else None
  info = api.BuildInfo(fs, ft, classes, num_train, ms.spec(), mt.spec(), tl)
  return info, vt


def run_term(term, info, teacher_vars_shape, batch=4):
  """Loss, gradients w.r.t. aux params and student features, under jit."""
  ctx = api.example_context(info, batch)
  aux = term.init(jax.random.key(1), ctx) if term.init else {'params': {}}
  rng = np.random.RandomState(1)
  rand = lambda feats: {k: jnp.asarray(rng.randn(*v.shape), jnp.float32) for k, v in feats.items()}
  tv = jax.tree.map(lambda a: jnp.asarray(rng.rand(*a.shape) + 0.1, a.dtype), teacher_vars_shape)
  params, state = aux['params'], {k: v for k, v in aux.items() if k != 'params'}

  def f(diff, state, t_feats, tv, labels, index):
    params, s_feats = diff
    c = dataclasses.replace(ctx, student=s_feats, teacher=t_feats, teacher_variables=tv,
                            labels=labels, index=index, train=True, rng=jax.random.key(5))
    loss, metrics, new_state = term.loss({'params': params, **state}, c)
    return loss, new_state

  labels = jnp.arange(batch, dtype=jnp.int32) % info.num_classes
  index = jnp.arange(batch, dtype=jnp.int32) * 3
  grad_fn = jax.jit(jax.value_and_grad(f, has_aux=True))
  (loss, new_state), (g, g_feats) = grad_fn((params, rand(ctx.student)), state, rand(ctx.teacher),
                                            tv, labels, index)
  return loss, g, g_feats, aux, new_state


@pytest.mark.parametrize('teacher,student', [('resnet32x4', 'resnet8x4'),
                                             ('vgg13', 'mobilenetv2')])
@pytest.mark.parametrize('method', ['fitnet', 'ab', 'ft', 'vid', 'ofd', 'cc', 'crd'])
def test_every_method_finite_under_jit(method, teacher, student):
  info, vt = build_info(teacher, student)
  (term,) = api.build_term({'method': method}, info)
  loss, g, g_feats, aux, new_state = run_term(term, info, vt)
  assert np.isfinite(float(loss)), (method, loss)
  assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves((g, g_feats)))
  if jax.tree.leaves(aux['params']):
    assert any(float(jnp.abs(x).sum()) > 0 for x in jax.tree.leaves(g)), method
  if method not in ('ft',):  # FT reads the last stage only; others touch several features
    assert any(float(jnp.abs(x).sum()) > 0 for x in jax.tree.leaves(g_feats)), method
  # The returned state has the same structure as the non-param collections.
  for k, v in new_state.items():
    assert jax.tree.structure(v) == jax.tree.structure(aux[k]), (method, k)


def test_crd_state_update_and_z():
  info, vt = build_info('resnet8x4', 'resnet8', num_train=40, classes=10)
  (term,) = api.build_term({'method': 'crd', 'nce_k': 100000}, info)
  _, _, _, aux, new = run_term(term, info, vt)
  mem = aux['memory']
  assert mem['memory_s'].shape == (40, 128)
  bound = 1 / math.sqrt(128 / 3)
  assert float(jnp.abs(mem['memory_s']).max()) <= bound
  np.testing.assert_array_equal(mem['z'], [-1.0, -1.0])
  z = np.asarray(new['memory']['z'])
  assert np.all(z > 0)
  # Rows of the batch (index 0, 3, 6, 9) were updated to unit norm; others unchanged.
  upd = np.asarray(new['memory']['memory_s'])
  np.testing.assert_allclose(np.linalg.norm(upd[[0, 3, 6, 9]], axis=1), 1.0, rtol=1e-5)
  np.testing.assert_array_equal(upd[1], mem['memory_s'][1])
  # A second call keeps Z.
  ctx = dataclasses.replace(api.example_context(info, 4), train=True)
  _, _, newer = term.loss({**aux, 'memory': new['memory']}, ctx)
  np.testing.assert_array_equal(newer['memory']['z'], z)


def test_builders_reject_bad_pairs():
  info, _ = build_info('resnet32x4', 'resnet8x4')
  # FitNet: a 8x8 student map cannot be regressed to a 32x32 teacher map.
  with pytest.raises(ValueError, match='fitnet'):
    api.build_term({'method': 'fitnet', 'student_feature': 'stage3', 'teacher_feature': 'stage1'},
                   info)
  with pytest.raises(ValueError, match='ab'):
    api.build_term({'method': 'ab', 'student_features': ['stage3_preact'],
                    'teacher_features': ['stage1_preact']}, info)
  with pytest.raises(ValueError, match='phase'):
    api.build_term({'method': 'ft', 'phase': 'x'}, info)
  info_v2, _ = build_info('shufflenetv2', 'resnet8x4')
  with pytest.raises(ValueError, match='shufflenetv2'):
    api.build_term({'method': 'ofd'}, info_v2)
  no_bn = dataclasses.replace(
      info, teacher_spec=dataclasses.replace(info.teacher_spec, bn_before_relu={}))
  with pytest.raises(ValueError, match='no BN directly in front'):
    api.build_term({'method': 'ofd'}, no_bn)
  with pytest.raises(ValueError, match='nce_m'):
    api.build_term({'method': 'crd', 'nce_m': 1.0}, info)
  with pytest.raises(ValueError, match='stage'):
    api.build_term({'method': 'vid', 'student_features': ['stage1', 'stage2']}, info)


def test_ft_phases_share_variables():
  info, _ = build_info('resnet32x4', 'resnet8x4')
  (a,) = api.build_term({'method': 'ft', 'phase': 'paraphraser', 'variant': 'rd'}, info)
  (b,) = api.build_term({'method': 'ft', 'variant': 'rd'}, info)
  assert a.name == b.name == 'ft' and a.weight == 1.0 and b.weight == 200.0
  ctx = api.example_context(info)
  sa = jax.tree.map(lambda x: x.shape, jax.eval_shape(lambda: a.init(jax.random.key(0), ctx)))
  sb = jax.tree.map(lambda x: x.shape, jax.eval_shape(lambda: b.init(jax.random.key(0), ctx)))
  assert sa == sb and set(sa['params']) == {'paraphraser', 'translator'}


def test_hint_trainable_regexes():
  import re
  pats = fitnet_lib.hint_trainable('resnet20', 2)
  hit = lambda p: any(re.search(r, p) for r in pats)
  assert hit('student/conv1/kernel') and hit('student/layer2_2/bn1/scale')
  assert not hit('student/layer3_0/conv1/kernel') and not hit('student/head/kernel')
  pats = fitnet_lib.hint_trainable('wrn_16_2', 2)
  assert any(re.search(r, 'student/block2_1/conv1/kernel') for r in pats)
  assert not any(re.search(r, 'student/block3_0/conv1/kernel') for r in pats)
  assert not any(re.search(r, 'student/bn1/scale') for r in pats)
  with pytest.raises(ValueError):
    fitnet_lib.hint_trainable('nonexistent', 2)


def test_transposed_conv_init_uses_torch_fan_in():
  """PyTorch's ConvTranspose weight is [C_in, C_out, k, k]: kaiming_uniform(a=sqrt(5)) bounds it
  by 1/sqrt(C_out k^2), not 1/sqrt(C_in k^2) (flax's default fan for its [k, k, C_in, C_out])."""
  c_in, c_out = 64, 4
  m = modules.ConvReg(c_out, (4, 4), (8, 8))  # 'transpose': ConvTranspose 4x4/2
  v = m.init(jax.random.key(0), jnp.ones((1, 4, 4, c_in)))
  k = np.abs(np.asarray(v['params']['conv']['kernel']))
  torch_bound, wrong_bound = 1 / math.sqrt(16 * c_out), 1 / math.sqrt(16 * c_in)
  assert k.max() <= torch_bound + 1e-7
  assert k.max() > 2 * wrong_bound  # ~U(+-torch_bound) over 4096 draws
  para = ft_lib.Paraphraser(32, 0.25)  # dec1: ConvTranspose 3x3, 8 -> 32
  v = para.init(jax.random.key(1), jnp.ones((1, 4, 4, 32)))
  k = np.abs(np.asarray(v['params']['dec1']['kernel']))
  assert k.max() <= 1 / math.sqrt(9 * 32) + 1e-7
  assert k.max() > 0.9 / math.sqrt(9 * 32)  # 2304 draws of U(+-1/sqrt(9*32))


def test_crd_warns_when_nce_k_is_clamped():
  # 120 samples over 100 classes: at most 120 - 2 = 118 distinct other-class negatives.
  info, _ = build_info('resnet8', 'resnet8', num_train=120)
  with pytest.warns(UserWarning, match='nce_k=16384 exceeds the 118 negatives'):
    api.build_term({'method': 'crd'}, info)
  with warnings.catch_warnings():
    warnings.simplefilter('error')
    api.build_term({'method': 'crd', 'nce_k': 100}, info)  # no clamp, no warning
