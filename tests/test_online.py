"""Tests of the online / self-distillation baselines: DML, ONE, Tf-KD self, BSS.

Reference values are recomputed in float64 numpy, independently of the library
code; DML's alternating order is checked through the generic train step
(`update_groups`); ONE through its flax model; BSS's attack on a linear model
whose input gradient is known in closed form, and end to end through a tiny
teacher/student pair.
"""

import dataclasses
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from kdjax import distill, models
from kdjax.distill import api
from kdjax.models.cohort import Cohort
from kdjax.models.one import create_one
from kdjax.train import optim as optim_lib, step as step_lib
from kdjax.distill.methods import bss as bss_lib
from kdjax.distill.methods import dml as dml_lib
from kdjax.distill.methods import one as one_lib
from kdjax.distill.methods import tfkd as tfkd_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def rand(seed, *shape, scale=1.0):
  return (np.random.default_rng(seed).normal(size=shape) * scale).astype(np.float32)


def np_softmax(z):
  z = np.asarray(z, np.float64)
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def np_log_softmax(z):
  z = np.asarray(z, np.float64)
  z = z - z.max(-1, keepdims=True)
  return z - np.log(np.exp(z).sum(-1, keepdims=True))


def np_ce(z, y):
  return -np.mean(np_log_softmax(z)[np.arange(len(y)), y])


# ----------------------------------------------------------------------------
# DML

@pytest.mark.parametrize('tau,tau_sq,reduction', [(1.0, False, 'mean'), (4.0, True, 'mean'),
                                                  (2.0, False, 'sum')])
def test_dml_loss_matches_numpy(tau, tau_sq, reduction):
  zs = [rand(i, 5, 7, scale=2.0) for i in range(3)]
  y = np.array([0, 3, 6, 2, 2])
  value, metrics = dml_lib.dml_loss([jnp.asarray(z) for z in zs], jnp.asarray(y), temperature=tau,
                               tau_squared=tau_sq, reduction=reduction)
  c = (0.5 if reduction == 'mean' else 1.0) * (tau ** 2 if tau_sq else 1.0)
  want = 0.0
  for i in range(3):
    log_pi = np_log_softmax(zs[i] / tau)
    kl = 0.0
    for j in range(3):
      if j != i:
        log_pj = np_log_softmax(zs[j] / tau)
        kl += np.mean(np.sum(np.exp(log_pj) * (log_pj - log_pi), -1))
    np.testing.assert_allclose(metrics[f'kl{i}'], c * kl, rtol=1e-5)
    want += np_ce(zs[i], y) + c * kl
  np.testing.assert_allclose(value, want, rtol=1e-5)


def test_dml_gradient_is_each_members_own_loss():
  """d(sum_i L_i)/dz_0 = (p_0 - y)/N + 1/(M-1) sum_j (p_0 - p_j)/N: peers are constants."""
  zs = [rand(10 + i, 4, 5) for i in range(3)]
  y = np.array([1, 0, 4, 2])
  g = jax.grad(lambda z0: dml_lib.dml_loss([z0] + [jnp.asarray(z) for z in zs[1:]], jnp.asarray(y))[0])(
      jnp.asarray(zs[0]))
  p = [np_softmax(z) for z in zs]
  onehot = np.eye(5)[y]
  want = (p[0] - onehot) / 4 + 0.5 * ((p[0] - p[1]) + (p[0] - p[2])) / 4
  np.testing.assert_allclose(g, want, rtol=1e-5, atol=1e-7)


class TinyNet(nn.Module):
  """Dense -> BN -> logits, returning (logits, features) like the model zoo."""
  num_classes: int = 3

  @nn.compact
  def __call__(self, x, *, train=False):
    h = nn.Dense(4)(x.reshape(x.shape[0], -1))
    h = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9)(h))
    return nn.Dense(self.num_classes, name='head')(h), {'pooled': h}


def _build_info(model, x, num_classes, teacher=None, teacher_vars=None):
  v = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
  lg, ft = jax.eval_shape(lambda v: model.apply(v, x, train=False), v)
  t_shapes = None
  if teacher is not None:
    tl, tf = jax.eval_shape(lambda: teacher.apply(teacher_vars, x, train=False))
    t_shapes = {**tf, 'logits': tl}
  return api.BuildInfo(student_shapes={**ft, 'logits': lg}, teacher_shapes=t_shapes,
                       num_classes=num_classes, num_train=8)


def _sgd(lr, params, groups=()):
  ocfg = ml_collections.ConfigDict(dict(weight_decay=0.0, momentum=0.0, nesterov=False))
  return optim_lib.make_tx(ocfg, optax.constant_schedule(lr), params, update_groups=groups)


def _run_one_step(student, terms, params, batch_stats, images, labels, lr, ce_weight=0.0,
                  teacher=None, teacher_vars=None, num_classes=3, stage_epochs=10.0):
  groups = optim_lib.update_groups(step_lib.stage_needs(terms))  # declared by the terms
  tx = _sgd(lr, {'student': params, 'aux': {}}, groups)
  cfg = step_lib.StepConfig(seed=0, steps_per_epoch=10, stage_start_step=0,
                            stage_epochs=stage_epochs, ce_weight=ce_weight, num_classes=num_classes)
  batch = {'image': images, 'label': labels, 'index': jnp.arange(images.shape[0])}
  fn = step_lib.make_train_step(student=student, teacher=teacher, terms=terms, tx=tx,
                                batch_fn=lambda data, step, key: data, cfg=cfg)
  state = {'step': jnp.zeros((), jnp.int32), 'params': {'student': params, 'aux': {}},
           'batch_stats': batch_stats, 'aux_state': {},
           'opt': tx.init({'student': params, 'aux': {}})}
  return jax.jit(fn)(state, teacher_vars, batch)


@pytest.mark.slow
def test_dml_alternating_update_through_step_uses_updated_first_network():
  k = 3
  student = Cohort((TinyNet(k), TinyNet(k)))
  x = jnp.asarray(rand(0, 6, 2, 2, 1))
  y = jnp.asarray([0, 1, 2, 0, 1, 2])
  v = student.init(jax.random.key(1), x, train=False)
  (term,) = api.build_term(dict(method='dml', temperature=2.0, tau_squared=True),
                           _build_info(student, x, k))
  lr = 0.5
  assert optim_lib.update_groups(term.needs) == ('(?:^student/member0/)', '(?:^student/member1/)')
  new_state, metrics = _run_one_step(student, (term,), v['params'], v['batch_stats'], x, y, lr)

  def loss(params):
    (_, f), _ = student.apply({'params': params, 'batch_stats': v['batch_stats']}, x, train=True,
                              mutable=['batch_stats'])
    return dml_lib.dml_loss([f['member0/logits'], f['member1/logits']], y, temperature=2.0,
                       tau_squared=True)[0]

  p0 = v['params']
  g0 = jax.grad(loss)(p0)
  p1 = dict(p0, member0=jax.tree.map(lambda a, g: a - lr * g, p0['member0'], g0['member0']))
  g1 = jax.grad(loss)(p1)   # second forward pass sees the updated member 0
  want1 = jax.tree.map(lambda a, g: a - lr * g, p0['member1'], g1['member1'])
  simultaneous1 = jax.tree.map(lambda a, g: a - lr * g, p0['member1'], g0['member1'])
  got = new_state['params']['student']
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               got['member0'], p1['member0'])
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               got['member1'], want1)
  diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(
      jax.tree.leaves(want1), jax.tree.leaves(simultaneous1)))
  assert diff > 1e-4, 'test is vacuous: alternating and simultaneous updates coincide'
  assert np.isfinite(metrics['loss/dml'])

  # alternate=False: the same step is the simultaneous update (official TF code).
  (sim_term,) = api.build_term(dict(method='dml', temperature=2.0, tau_squared=True,
                                    alternate=False), _build_info(student, x, k))
  sim_state, _ = _run_one_step(student, (sim_term,), v['params'], v['batch_stats'], x, y, lr)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               sim_state['params']['student']['member1'], simultaneous1)


def test_dml_builder_requires_cohort():
  x = jnp.zeros((2, 2, 2, 1))
  with pytest.raises(ValueError, match='cohort'):
    api.build_term(dict(method='dml'), _build_info(TinyNet(3), x, 3))
  info = _build_info(Cohort((TinyNet(3), TinyNet(3))), x, 3)
  with pytest.raises(ValueError, match='reduction'):
    api.build_term(dict(method='dml', reduction='max'), info)
  (t,) = api.build_term(dict(method='dml'), info)
  assert not t.needs_teacher and t.weight == 1.0


# ----------------------------------------------------------------------------
# ONE

def test_one_loss_matches_numpy():
  tau, w = 3.0, 0.37
  zb = [rand(20 + i, 4, 6, scale=2.0) for i in range(3)]
  ze = rand(30, 4, 6, scale=2.0)
  y = np.array([5, 0, 1, 1])
  value, metrics = one_lib.one_loss([jnp.asarray(z) for z in zb], jnp.asarray(ze), jnp.asarray(y),
                               kl_weight=w, temperature=tau)
  q = np_softmax(ze / tau) + 1e-7
  kl = sum(tau ** 2 * np.sum(q * (np.log(q) - np_log_softmax(z / tau))) / 4 for z in zb)
  ce = sum(np_ce(z, y) for z in zb) + np_ce(ze, y)
  np.testing.assert_allclose(metrics['kl'], kl, rtol=1e-5)
  np.testing.assert_allclose(value, ce + w * kl, rtol=1e-5)
  v2, _ = one_lib.one_loss([jnp.asarray(z) for z in zb], jnp.asarray(ze), jnp.asarray(y),
                      kl_weight=w, temperature=tau, ensemble_ce=False)
  np.testing.assert_allclose(v2, ce - np_ce(ze, y) + w * kl, rtol=1e-5)


def test_one_kl_gives_no_gradient_to_the_ensemble_logits():
  zb, ze = jnp.asarray(rand(1, 3, 5)), jnp.asarray(rand(2, 3, 5))
  g_e = jax.grad(lambda e: one_lib.one_kl(zb, e))(ze)
  g_b = jax.grad(lambda b: one_lib.one_kl(b, ze))(zb)
  np.testing.assert_array_equal(g_e, 0.0)
  assert float(jnp.max(jnp.abs(g_b))) > 1e-3


def test_one_rampup():
  e = lambda p, **kw: float(one_lib.one_rampup(jnp.asarray(p, jnp.float32), 80.0, **kw))
  assert e(0.0) == pytest.approx(np.exp(-5.0))
  assert e(40.7) == pytest.approx(np.exp(-5.0 * 0.5 ** 2))   # per epoch: floor(40.7) = 40
  assert e(40.7, per_epoch=False) == pytest.approx(np.exp(-5.0 * (1 - 40.7 / 80) ** 2))
  assert e(80.0) == pytest.approx(1.0) and e(250.0) == pytest.approx(1.0)
  assert float(one_lib.one_rampup(jnp.asarray(3.0), 0.0)) == 1.0


@pytest.fixture(scope='module')
def one_net():
  model = create_one('resnet8', 10, branches=3)
  x = jnp.asarray(rand(3, 4, 16, 16, 3))
  v = jax.jit(lambda k, x: model.init(k, x, train=False))(jax.random.key(0), x)
  return model, v, x


@pytest.mark.slow
def test_one_model_features_gate_and_ensemble(one_net):
  model, v, x = one_net
  (logits, f), _ = model.apply(v, x, train=True, mutable=['batch_stats'])
  for key in ('stem', 'stage1', 'stage2', 'stage3', 'pooled', 'gate', 'ensemble/logits',
              'branch0/logits', 'branch1/logits', 'branch2/logits'):
    assert key in f, key
  assert f['gate'].shape == (4, 3)
  np.testing.assert_allclose(jnp.sum(f['gate'], -1), 1.0, rtol=1e-6)
  assert bool(jnp.all(f['gate'] >= 0))
  want = sum(f['gate'][:, i:i + 1] * f[f'branch{i}/logits'] for i in range(3))
  np.testing.assert_allclose(logits, want, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(logits, f['ensemble/logits'])
  lg, fe = model.apply(v, x, train=False)
  np.testing.assert_allclose(jnp.sum(fe['gate'], -1), 1.0, rtol=1e-6)
  # Branches are independent copies: different initial parameters.
  p = v['params']
  assert not np.allclose(p['branch0']['head']['kernel'], p['branch1']['head']['kernel'])


def test_one_kl_does_not_train_gate_or_ensemble(one_net):
  model, v, x = one_net

  def kl_part(params):
    (_, f), _ = model.apply({**v, 'params': params}, x, train=True, mutable=['batch_stats'])
    return sum(one_lib.one_kl(f[f'branch{i}/logits'], f['ensemble/logits']) for i in range(3))

  g = jax.jit(jax.grad(kl_part))(v['params'])
  for name in ('gate_fc', 'gate_bn'):
    for leaf in jax.tree.leaves(g[name]):
      np.testing.assert_array_equal(leaf, 0.0)
  assert float(jnp.max(jnp.abs(g['branch1']['head']['kernel']))) > 0
  assert float(jnp.max(jnp.abs(g['conv1']['kernel']))) > 0   # the shared trunk learns from it

  def ce_part(params):
    (_, f), _ = model.apply({**v, 'params': params}, x, train=True, mutable=['batch_stats'])
    return dml_lib._ce(f['ensemble/logits'], jnp.arange(4))
  g_ce = jax.jit(jax.grad(ce_part))(v['params'])
  assert float(jnp.max(jnp.abs(g_ce['gate_fc']['kernel']))) > 0   # the gate learns from CE(z_e)


def test_one_param_count_vs_resnet32():
  def count(m):
    return models.param_count(jax.eval_shape(
        lambda: m.init(jax.random.key(0), jnp.zeros((2, 32, 32, 3)), train=False)))
  one, plain = count(create_one('resnet32', 10)), count(models.create('resnet32', 10))
  # Self-Guidance Table 2 lists ONE (ResNet-32) at 1.18M, ResNet-32 at 0.47M.
  assert 1.17e6 < one < 1.19e6 and 0.46e6 < plain < 0.475e6
  assert count(create_one('wrn_10_2', 10)) > count(models.create('wrn_10_2', 10))


def test_create_one_errors_and_variants():
  with pytest.raises(ValueError, match='6n\\+2'):
    create_one('resnet30', 10)
  with pytest.raises(ValueError, match='unsupported'):
    create_one('vgg8', 10)
  with pytest.raises(ValueError, match='branches'):
    create_one('resnet8', 10, branches=0)
  assert models.create('one_resnet8', 10, branches=2).branches == 2   # the zoo's name for it
  with pytest.raises(ValueError, match='unsupported'):
    models.create('one_vgg8', 10)
  assert create_one('resnet56', 10, block='auto').block == 'bottleneck'
  assert create_one('resnet56', 10).block == 'basic'
  m = create_one('wrn_10_2', 10, branches=2)
  x = jnp.zeros((2, 8, 8, 3))
  _, f = jax.eval_shape(lambda: m.apply(m.init(jax.random.key(0), x, train=False), x, train=False))
  assert f['gate'].shape == (2, 2) and f['branch1/logits'].shape == (2, 10)
  assert f['pooled'].shape == (2, 128)


def test_one_term_through_builder(one_net):
  model, v, x = one_net
  info = _build_info(model, x, 10)
  (t,) = api.build_term(dict(method='one'), info)
  assert not t.needs_teacher
  lg, f = model.apply(v, x, train=False)
  ctx = dataclasses.replace(api.example_context(info, batch=4), student={**f, 'logits': lg},
                            labels=jnp.arange(4), progress=jnp.asarray(10.5))
  value, metrics, _ = t.loss({}, ctx)
  np.testing.assert_allclose(metrics['rampup'], np.exp(-5 * (1 - 10 / 80) ** 2), rtol=1e-6)
  want, _ = one_lib.one_loss([f[f'branch{i}/logits'] for i in range(3)], f['ensemble/logits'],
                        jnp.arange(4), kl_weight=metrics['rampup'], temperature=3.0)
  np.testing.assert_allclose(value, want, rtol=1e-6)
  with pytest.raises(ValueError, match='ONE student'):
    api.build_term(dict(method='one'), _build_info(TinyNet(3), jnp.zeros((2, 2, 2, 1)), 3))


# ----------------------------------------------------------------------------
# Tf-KD self

def test_tfkd_self_reduction_hand_checked():
  zs, zt = rand(5, 3, 4, scale=3.0), rand(6, 3, 4, scale=3.0)
  tau, m = 6.0, 50.0
  got = tfkd_lib.tfkd_self(jnp.asarray(zs), jnp.asarray(zt), temperature=tau, multiplier=m)
  q, log_p = np_softmax(zt / tau), np_log_softmax(zs / tau)
  elementwise = q * (np.log(q) - log_p)            # PyTorch KLDivLoss, before reduction
  want = m * tau ** 2 * elementwise.sum() / (3 * 4)  # default 'mean' over N*K elements
  np.testing.assert_allclose(got, want, rtol=1e-5)
  # = m / K times the batchmean KD term.
  from kdjax import losses
  kd = losses.kd(jnp.asarray(zs), jnp.asarray(zt), temperature=tau)
  np.testing.assert_allclose(got, m / 4 * kd, rtol=1e-5)
  # A tiny case by hand: K=2, identical teacher and student -> 0.
  np.testing.assert_allclose(tfkd_lib.tfkd_self(jnp.ones((1, 2)), jnp.ones((1, 2))), 0.0, atol=1e-7)


def test_tfkd_self_builder_checks_architecture():
  x = jnp.zeros((2, 2, 2, 1))
  info = dataclasses.replace(_build_info(TinyNet(3), x, 3, TinyNet(3), TinyNet(3).init(
      jax.random.key(0), x)), student_spec=models.spec('resnet8', 3),
      teacher_spec=models.spec('resnet20', 3))
  with pytest.raises(ValueError, match='self-training'):
    api.build_term(dict(method='tfkd_self'), info)
  (t,) = api.build_term(dict(method='tfkd_self', require_same_arch=False), info)
  assert t.weight == 0.95 and t.needs_teacher
  (t,) = api.build_term(dict(method='tfkd_self'), dataclasses.replace(info, teacher_spec=info.student_spec))


# ----------------------------------------------------------------------------
# BSS

def test_bss_schedules():
  r = lambda e: float(bss_lib.bss_ratio(jnp.asarray(e, jnp.float32), 200.0))
  ra = lambda e: float(bss_lib.bss_attack_ratio(jnp.asarray(e, jnp.float32), 200.0))
  assert r(0) == pytest.approx(4.0) and r(100) == pytest.approx(2.5) and r(200) == pytest.approx(1.0)
  assert ra(0) == pytest.approx(2.0) and ra(75) == pytest.approx(1.0)
  assert ra(150) == pytest.approx(0.0) and ra(190) == 0.0


def test_bss_soft_ce_matches_numpy():
  zs, zt = rand(7, 5, 4, scale=2.0), rand(8, 5, 4, scale=2.0)
  w = np.array([1, 0, 1, 1, 0], np.float32)
  rows = -np.sum(np_softmax(zt / 4.0) * np_log_softmax(zs / 4.0), -1)
  np.testing.assert_allclose(bss_lib.bss_soft_ce(jnp.asarray(zs), jnp.asarray(zt), temperature=4.0),
                             rows.mean(), rtol=1e-5)
  np.testing.assert_allclose(bss_lib.bss_soft_ce(jnp.asarray(zs), jnp.asarray(zt), temperature=4.0,
                                            weights=jnp.asarray(w)), rows[w > 0].mean(), rtol=1e-5)
  np.testing.assert_allclose(bss_lib.bss_soft_ce(jnp.asarray(zs), jnp.asarray(zt),
                                            weights=jnp.zeros(5)), 0.0)


def test_select_base_samples_correct_for_both_and_top_k():
  rng = np.random.default_rng(0)
  n, k = 12, 5
  labels = rng.integers(0, 4, n)
  zt = rng.normal(size=(n, 4)).astype(np.float32)
  zs = rng.normal(size=(n, 4)).astype(np.float32)
  # Make samples 0-7 teacher-correct, 0-5 also student-correct, with varied margins.
  for i in range(8):
    zt[i, labels[i]] = 3.0 + i * 0.3
  for i in range(6):
    zs[i, labels[i]] = 2.0 + rng.uniform()
  zs[6, labels[6]] = -5.0
  zs[7, labels[7]] = -5.0
  for i in range(8, n):
    zt[i, labels[i]] = -5.0
  pt, ps = np_softmax(zt), np_softmax(zs)
  diff = (pt - ps) ** 2
  score = diff.sum(-1) - diff[np.arange(n), labels]
  both = (pt.argmax(-1) == labels) & (ps.argmax(-1) == labels)
  assert both.sum() == 6
  idx, valid = bss_lib.select_base_samples(jnp.asarray(zt), jnp.asarray(zs), jnp.asarray(labels), k)
  idx, valid = np.asarray(idx), np.asarray(valid)
  assert valid.all() and both[idx].all()
  want = np.argsort(-np.where(both, score, -np.inf))[:k]
  assert set(idx.tolist()) == set(want.tolist())
  # More slots than eligible samples: all eligible ones, the rest flagged invalid.
  idx, valid = bss_lib.select_base_samples(jnp.asarray(zt), jnp.asarray(zs), jnp.asarray(labels), 9)
  assert set(np.asarray(idx)[np.asarray(valid)].tolist()) == set(np.flatnonzero(both).tolist())
  # Official-code form: teacher-correct is enough.
  idx, valid = bss_lib.select_base_samples(jnp.asarray(zt), jnp.asarray(zs), jnp.asarray(labels), 9,
                                      require_student_correct=False)
  assert set(np.asarray(idx)[np.asarray(valid)].tolist()) == set(range(8))
  # Attack size larger than the batch.
  idx, _ = bss_lib.select_base_samples(jnp.asarray(zt), jnp.asarray(zs), jnp.asarray(labels), 64)
  assert idx.shape == (n,)


def test_sample_target_class_never_gt_and_proportional():
  zt = np.log(np.array([[0.5, 0.3, 0.15, 0.05]], np.float32))
  t = np.asarray(bss_lib.sample_target_class(jax.random.key(0), jnp.asarray(np.repeat(zt, 20000, 0))))
  assert (t != 0).all()
  freq = np.bincount(t, minlength=4) / len(t)
  np.testing.assert_allclose(freq[1:], np.array([0.3, 0.15, 0.05]) / 0.5, atol=0.015)
  z = rand(9, 64, 10, scale=3.0)
  t = np.asarray(bss_lib.sample_target_class(jax.random.key(1), jnp.asarray(z)))
  assert (t != z.argmax(-1)).all() and ((t >= 0) & (t < 10)).all()


def _linear(w):
  return lambda x: x.reshape(x.shape[0], -1) @ w


def test_bss_attack_one_step_hand_computed():
  """Linear model: g = W[:, t] - W[:, gt]; x1 = clip(x + a (z_gt - z_t + 1e-4) g / |g|)."""
  w = rand(11, 6, 3)
  x = rand(12, 4, 6, scale=0.5)
  gt = np.argmax(x @ w, -1)
  target = (gt + 1) % 3
  mask = np.array([True, True, False, True])
  got = bss_lib.bss_attack(_linear(jnp.asarray(w)), jnp.asarray(x), jnp.asarray(mask),
                      jnp.asarray(target), jnp.asarray(gt), steps=1, step_size=0.3, clamp=2.5)
  z = x.astype(np.float64) @ w
  want = x.astype(np.float64).copy()
  for i in range(4):
    if not mask[i]:
      continue
    g = w[:, target[i]] - w[:, gt[i]]
    want[i] = np.clip(x[i] + 0.3 * (z[i, gt[i]] - z[i, target[i]] + 1e-4) * g / np.linalg.norm(g),
                      -2.5, 2.5)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_bss_attack_moves_toward_target_within_clamp():
  w = rand(13, 12, 5, scale=0.3)
  x = rand(14, 16, 2, 2, 3, scale=2.0)     # some pixels start outside [-2.5, 2.5]
  f = _linear(jnp.asarray(w))
  z0 = np.asarray(f(jnp.asarray(x)))
  gt = z0.argmax(-1)
  target = np.asarray(bss_lib.sample_target_class(jax.random.key(3), jnp.asarray(z0)))
  mask = np.ones(16, bool)
  mask[-3:] = False
  x_adv = np.asarray(bss_lib.bss_attack(f, jnp.asarray(x), jnp.asarray(mask), jnp.asarray(target),
                                   jnp.asarray(gt)))
  z1 = np.asarray(f(jnp.asarray(x_adv)))
  rows = np.arange(16)
  margin0 = z0[rows, target] - z0[rows, gt]
  margin1 = z1[rows, target] - z1[rows, gt]
  assert (margin1[mask] > margin0[mask]).all()
  assert (x_adv[mask] >= -2.5).all() and (x_adv[mask] <= 2.5).all()
  np.testing.assert_array_equal(x_adv[~mask], x[~mask])
  # The margin to the target shrinks a lot within 10 steps (clamping slows some samples).
  assert np.median(margin1[mask] / margin0[mask]) < 0.5


class TinyConv(nn.Module):
  num_classes: int = 4
  width: int = 4

  @nn.compact
  def __call__(self, x, *, train=False):
    h = nn.Conv(self.width, (3, 3))(x)
    h = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9)(h))
    p = jnp.mean(h, axis=(1, 2))
    return nn.Dense(self.num_classes, name='head')(p), {'pooled': p}


@pytest.mark.slow
def test_bss_term_end_to_end_through_step():
  k, n = 4, 8
  teacher, student = TinyConv(k, 6), TinyConv(k, 3)
  x = jnp.asarray(rand(15, n, 6, 6, 3))
  tv = teacher.init(jax.random.key(0), x, train=False)
  sv = student.init(jax.random.key(1), x, train=False)
  t_logits, _ = teacher.apply(tv, x, train=False)
  y = jnp.argmax(t_logits, -1)  # teacher-correct everywhere, so base='teacher' attacks all
  info = _build_info(student, x, k, teacher, tv)
  (term,) = api.build_term(dict(method='bss', temperature=4.0, attack_size=5, base='teacher'), info)
  new_state, metrics = _run_one_step(student, (term,), sv['params'], sv['batch_stats'], x, y,
                                     0.1, ce_weight=1.0, teacher=teacher, teacher_vars=tv,
                                     num_classes=k)
  assert float(metrics['bss/attacked']) == 5.0
  # Epoch 1 of 10: r = 3 (1 - 1/10) + 1, r_a = 2 (1 - 4/30).
  assert float(metrics['bss/ratio']) == pytest.approx(3.7)
  assert float(metrics['bss/attack_ratio']) == pytest.approx(2 * (1 - 4 / 30))
  assert np.isfinite(float(metrics['loss/bss'])) and float(metrics['bss/adversarial']) > 0
  changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), new_state['params']['student'],
                         sv['params'])
  assert all(jax.tree.leaves(changed))
  # The term is the weighted sum of its parts.
  np.testing.assert_allclose(
      metrics['loss/bss'], metrics['bss/ratio'] * metrics['bss/clean']
      + metrics['bss/attack_ratio'] * metrics['bss/adversarial'], rtol=1e-5)


@pytest.mark.slow
def test_bss_term_schedule_and_skip():
  """Progress 0 of 4 epochs: r = max(3 (1 - 1/4), 0) + 1 = 3.25, r_a = 2 (1 - 1/3) = 4/3;
  late in training r_a = 0 and no attack runs."""
  k, n = 4, 6
  teacher, student = TinyConv(k, 5), TinyConv(k, 3)
  x = jnp.asarray(rand(16, n, 5, 5, 3))
  tv = teacher.init(jax.random.key(2), x)
  sv = student.init(jax.random.key(3), x)
  info = _build_info(student, x, k, teacher, tv)
  (term,) = api.build_term(dict(method='bss', attack_size=4, base='teacher'), info)
  tl, tf = teacher.apply(tv, x)
  sl, sf = student.apply(sv, x)

  def ctx_at(progress):
    return api.Context(student={**sf, 'logits': sl}, teacher={**tf, 'logits': tl},
                       labels=jnp.argmax(tl, -1), index=jnp.arange(n), images=x,
                       rng=jax.random.key(4), progress=jnp.asarray(progress, jnp.float32),
                       stage_epochs=4.0, train=True, num_classes=k,
                       apply_student=lambda xx: student.apply(sv, xx),
                       apply_teacher=lambda xx: teacher.apply(tv, xx))
  _, m, _ = term.loss({}, ctx_at(0.3))
  assert float(m['ratio']) == pytest.approx(3.25) and float(m['attack_ratio']) == pytest.approx(4 / 3)
  assert float(m['attacked']) == 4.0
  _, m, _ = term.loss({}, ctx_at(3.2))
  assert float(m['attack_ratio']) == 0.0 and float(m['attacked']) == 0.0
  assert float(m['adversarial']) == 0.0


# ----------------------------------------------------------------------------
# Registry and configs

def test_registered_with_defaults():
  reg = distill.registered_methods()
  for name, module in (('dml', 'dml'), ('one', 'one'), ('tfkd_self', 'tfkd'), ('bss', 'bss')):
    assert name in reg and reg[name].builder.__module__ == f'kdjax.distill.methods.{module}'
  hp = distill.hyperparameters
  assert hp('bss')['temperature'] == 3.0 and hp('bss')['attack_size'] == 64
  assert hp('one')['temperature'] == 3.0 and hp('one')['rampup_epochs'] == 80.0
  assert hp('dml')['temperature'] == 1.0 and hp('dml')['reduction'] == 'mean'
  assert hp('tfkd_self')['multiplier'] == 50.0 and hp('tfkd_self')['temperature'] == 6.0
