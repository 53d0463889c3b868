"""Seed-paper methods: IE-KD / IE-DML, Self-Guidance, SRRL, IPWD, PS-KD.

Each loss is checked on a tiny case computed independently in numpy; the
method-specific properties (fixed IE-KD split, exploration vs inheritance,
stochastic-depth masks, frozen SRRL teacher head, IPW weights, PS-KD epoch-0
targets) are checked through the registered terms on tiny models (8x8 inputs).
"""

from __future__ import annotations

import functools
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import absltest

from kdjax import models
from kdjax.distill import api
from kdjax.models.cohort import Cohort
from kdjax.distill.methods import ie_kd as ie_kd_lib
from kdjax.distill.methods import ipwd as ipwd_lib
from kdjax.distill.methods import pskd as pskd_lib
from kdjax.distill.methods import self_guidance as self_guidance_lib
from kdjax.distill.methods import srrl as srrl_lib
from kdjax.train import optim as optim_lib, step as step_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N, HW = 4, 8


def _np_softmax(z, axis=-1):
  z = z - z.max(axis=axis, keepdims=True)
  e = np.exp(z)
  return e / e.sum(axis=axis, keepdims=True)


def _np_log_softmax(z):
  z = z - z.max(-1, keepdims=True)
  return z - np.log(np.exp(z).sum(-1, keepdims=True))


def _np_ce(z, y):
  return float(-np.mean(_np_log_softmax(z)[np.arange(len(y)), y]))


def _np_kl(pt_logits, ps_logits, tau):
  lp, lq = _np_log_softmax(pt_logits / tau), _np_log_softmax(ps_logits / tau)
  return float(np.mean(np.sum(np.exp(lp) * (lp - lq), -1)))


def _nrm(x):
  x = x.reshape(x.shape[0], -1)
  return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


# ----------------------------------------------------------------------------
# Tiny models shared by the term-level tests (built once).

class _DS:
  image_shape = (HW, HW, 3)


@functools.lru_cache(maxsize=None)
def _setup(cohort: bool = False):
  from kdjax.train.setup import feature_shapes
  if cohort:
    s = Cohort((models.create('resnet8', 10), models.create('resnet8', 10)))
  else:
    s = models.create('resnet8', 10)
  t = models.create('resnet14', 10)
  x = jnp.zeros((2, HW, HW, 3))
  sv = s.init(jax.random.key(0), x, train=False)
  tv = t.init(jax.random.key(1), x, train=False)
  info = api.BuildInfo(student_shapes=feature_shapes(s, sv, _DS),
                       teacher_shapes=feature_shapes(t, tv, _DS), num_classes=10, num_train=20,
                       student_spec=s.spec(), teacher_spec=t.spec())
  return s, sv, t, tv, info


def _images(seed=0, n=N):
  return jnp.asarray(np.random.default_rng(seed).normal(size=(n, HW, HW, 3)), jnp.float32)


def _context(student_vars=None, *, cohort=False, seed=0, progress=1.5, survival=None,
             labels=(1, 2, 3, 4), index=(0, 5, 7, 9), keep=None):
  s, sv, t, tv, info = _setup(cohort)
  sv = sv if student_vars is None else student_vars
  imgs = _images(seed)

  def apply_student(x, **kw):
    (lg, ft), _ = s.apply(sv, x, train=True, mutable=['batch_stats'], **kw)
    return lg, {**ft, 'logits': lg}
  kw = {} if keep is None else {'branch_scale': keep}
  _, sf = apply_student(imgs, **kw)
  tl, tf = t.apply(tv, imgs, train=False)
  return api.Context(student=sf, teacher=jax.lax.stop_gradient({**tf, 'logits': tl}),
                     labels=jnp.asarray(labels), index=jnp.asarray(index), images=imgs,
                     rng=jax.random.key(0), progress=jnp.float32(progress), stage_epochs=4.0,
                     train=True, num_classes=10, apply_student=apply_student,
                     teacher_variables=tv, survival=survival)


def _term(spec, cohort=False):
  (term,) = api.build_term(spec, _setup(cohort)[4])
  return term


def _aux(term, seed=3, cohort=False):
  if term.init is None:
    return {'params': {}}
  return {'params': {}, **term.init(jax.random.key(seed), api.example_context(_setup(cohort)[4]))}


# ----------------------------------------------------------------------------
# IE-KD

class IEKDLossTest(absltest.TestCase):

  def setUp(self):
    rng = np.random.default_rng(0)
    self.a = rng.normal(size=(3, 2, 2, 4)).astype(np.float32)
    self.b = rng.normal(size=(3, 2, 2, 4)).astype(np.float32)

  def test_distances_match_numpy(self):
    a, b = _nrm(self.a), _nrm(self.b)
    d = a - b
    want = {'l1': np.mean(np.abs(d)), 'l2': np.sqrt(np.mean(d * d)),
            'cos': np.mean(1 - np.sum(a * b, 1)),
            'partial_l2': np.mean(d * d * ((a > b) | (b > 0)))}
    for m, w in want.items():
      np.testing.assert_allclose(ie_kd_lib.factor_distance(self.a, self.b, m), w, rtol=1e-5)
    np.testing.assert_allclose(ie_kd_lib.exploration_distance(self.a, self.b, 'l1'), -want['l1'],
                               rtol=1e-5)
    np.testing.assert_allclose(ie_kd_lib.exploration_distance(self.a, self.b, 'cos'),
                               np.mean(np.abs(np.sum(a * b, 1))), rtol=1e-5)
    np.testing.assert_allclose(ie_kd_lib.reconstruction(self.a, self.b, 'l1'),
                               np.mean(np.abs(self.a - self.b)), rtol=1e-6)
    np.testing.assert_allclose(ie_kd_lib.reconstruction(self.a, self.b, 'l2'),
                               np.mean((self.a - self.b) ** 2), rtol=1e-6)

  def test_variants(self):
    # IE-AT: L1 between L2-normalised mean_c |F|^2 maps; IE-OD: relu, L2.
    at = lambda f: _nrm(np.mean(f ** 2, -1))
    l_inh, l_exp = ie_kd_lib.inheritance_exploration(self.a, self.b, self.b, variant='at')
    np.testing.assert_allclose(l_inh, np.mean(np.abs(at(self.a) - at(self.b))), rtol=1e-5)
    np.testing.assert_allclose(l_exp, 0.0, atol=1e-7)
    l_inh, _ = ie_kd_lib.inheritance_exploration(self.a, None, self.b, variant='od', metric='l2')
    d = _nrm(np.maximum(self.a, 0)) - _nrm(np.maximum(self.b, 0))
    np.testing.assert_allclose(l_inh, np.sqrt(np.mean(d * d)), rtol=1e-5)

  def test_split(self):
    f = np.arange(2 * 6, dtype=np.float32).reshape(1, 1, 2, 6)
    perm = jnp.array([3, 0, 5, 1, 4, 2])
    inh, exp = ie_kd_lib.channel_split(jnp.asarray(f), perm, 2)
    np.testing.assert_array_equal(inh, f[..., [3, 0]])
    np.testing.assert_array_equal(exp, f[..., [5, 1, 4, 2]])
    self.assertEqual(ie_kd_lib.num_inherit(64, 0.3), 19)


class IEKDTermTest(absltest.TestCase):

  def test_split_fixed_and_restored_from_state(self):
    term = _term(dict(method='ie_kd'))
    aux = _aux(term, seed=3)
    perm = np.asarray(aux['ie_split']['perm'])
    self.assertEqual(sorted(perm.tolist()), list(range(64)))
    # Deterministic from the init key (a function of the run's seed) ...
    np.testing.assert_array_equal(_aux(term, seed=3)['ie_split']['perm'], perm)
    self.assertFalse(np.array_equal(_aux(term, seed=4)['ie_split']['perm'], perm))
    # ... and never rewritten by a step: the returned state has no 'ie_split',
    # so the train step keeps the stored one for every later step.
    for seed in (0, 1):
      _, _, new = term.loss(aux, _context(seed=seed))
      self.assertNotIn('ie_split', new)
    # The loss uses the permutation *from the state* (a restored checkpoint).
    ctx = _context()
    other = dict(aux, ie_split={'perm': jnp.asarray(perm[::-1].copy())})
    l1, _, _ = term.loss(aux, ctx)
    l2, _, _ = term.loss(other, ctx)
    self.assertNotAlmostEqual(float(l1), float(l2), places=5)
    l3, _, _ = term.loss(jax.tree.map(jnp.array, aux), ctx)
    self.assertEqual(float(l1), float(l3))

  def test_exploration_and_inheritance_move_similarity(self):
    rng = np.random.default_rng(1)
    f_t = jnp.asarray(rng.normal(size=(N, 2, 2, 8)), jnp.float32)
    f0 = jnp.asarray(rng.normal(size=(N, 2, 2, 8)), jnp.float32) + 0.5 * f_t

    def cos_sim(f):
      return float(np.mean(np.sum(_nrm(np.asarray(f)) * _nrm(np.asarray(f_t)), 1)))

    inh = lambda f: ie_kd_lib.inheritance_exploration(f, None, f_t)[0]
    exp = lambda f: ie_kd_lib.inheritance_exploration(None, f, f_t)[1]
    f_inh = f0 - 0.5 * jax.grad(inh)(f0)
    f_exp = f0 - 0.5 * jax.grad(exp)(f0)
    self.assertGreater(cos_sim(f_inh), cos_sim(f0))
    self.assertLess(cos_sim(f_exp), cos_sim(f0))
    self.assertLess(float(inh(f_inh)), float(inh(f0)))       # distance down
    self.assertGreater(float(-exp(f_exp)), float(-exp(f0)))  # distance up

  def test_term_gradient_on_student_features(self):
    """Through the term (encoders included): a step on the student's map moves each factor."""
    aux = None
    for which, w_inh, w_exp in (('inh', 50.0, 0.0), ('exp', 0.0, 50.0)):
      term = _term(dict(method='ie_kd', inherit_weight=w_inh, explore_weight=w_exp))
      aux = _aux(term) if aux is None else aux
      ctx = _context()

      def f(feat, ctx=ctx, term=term):
        c = api.Context(**{**ctx.__dict__, 'student': {**ctx.student, 'last_map': feat}})
        loss, m, _ = term.loss(aux, c)
        return loss, m
      feat = ctx.student['last_map']
      (_, m0), g = jax.value_and_grad(f, has_aux=True)(feat)
      _, m1 = f(feat - 0.05 * g / (jnp.abs(g).max() + 1e-12))
      if which == 'inh':
        self.assertLess(float(m1['inh']), float(m0['inh']))  # more similar
      else:
        self.assertLess(float(m1['exp']), float(m0['exp']))  # -distance down: less similar

  @pytest.mark.slow
  def test_ae_phase_and_stage_sharing(self):
    ae_term = _term(dict(method='ie_kd', phase='ae'))
    main_term = _term(dict(method='ie_kd'))
    aux = _aux(ae_term)
    # Same aux structure in both phases (they share the variables of term 'ie').
    chex.assert_trees_all_equal_shapes(aux, _aux(main_term))
    ctx = _context()

    def rec(p):
      return ae_term.loss({**aux, 'params': p}, ctx)[0]
    g = jax.grad(rec)(aux['params'])
    self.assertGreater(float(optax_norm(g['ae'])), 0.0)
    self.assertEqual(float(optax_norm(g['inh'])), 0.0)

  @pytest.mark.slow
  def test_two_stages_through_the_train_step(self):
    """AE stage trains only the AE; main stage freezes it; the split never changes."""
    from kdjax.config import base_config
    s, sv, t, tv, info = _setup()
    ae_term, main_term = _term(dict(method='ie_kd', phase='ae')), _term(dict(method='ie_kd'))
    aux = _aux(ae_term)
    params = {'student': sv['params'], 'aux': {'ie': aux.pop('params')}}
    state = {'step': jnp.zeros((), jnp.int32), 'params': params,
             'batch_stats': sv['batch_stats'], 'aux_state': {'ie': aux}}
    data = {'image': _images(), 'label': jnp.array([1, 2, 3, 4]), 'index': jnp.arange(4)}
    o = base_config().optim
    perm0 = np.asarray(state['aux_state']['ie']['ie_split']['perm'])

    def run(state, term, trainable, ce_weight):
      tx = optim_lib.make_tx(o, lambda _: 0.1, state['params'], trainable=trainable)
      cfg = step_lib.StepConfig(seed=0, steps_per_epoch=10, stage_start_step=0, stage_epochs=1.0,
                                ce_weight=ce_weight, num_classes=10)
      fn = jax.jit(step_lib.make_train_step(student=s, teacher=t, terms=(term,), tx=tx,
                                            batch_fn=lambda d, step, key: d, cfg=cfg))
      state = {**state, 'opt': tx.init(state['params'])}
      for _ in range(2):
        state, _ = fn(state, tv, data)
      return {k: v for k, v in state.items() if k != 'opt'}

    def changed(a, b):
      return float(optax_norm(jax.tree.map(lambda x, y: x - y, a, b))) > 0

    s1 = run(state, ae_term, ('^aux/ie/ae/',), 0.0)
    p0, p1 = state['params'], s1['params']
    self.assertTrue(changed(p1['aux']['ie']['ae'], p0['aux']['ie']['ae']))
    self.assertFalse(changed(p1['aux']['ie']['inh'], p0['aux']['ie']['inh']))
    self.assertFalse(changed(p1['student'], p0['student']))
    # The 'ae' term declares the student in eval mode: its BN statistics stay put.
    self.assertTrue(ae_term.needs.student_eval and not main_term.needs.student_eval)
    self.assertFalse(changed(s1['batch_stats'], state['batch_stats']))
    s2 = run(s1, main_term, ('^student/', '^aux/ie/(inh|exp)/'), 1.0)
    p2 = s2['params']
    self.assertFalse(changed(p2['aux']['ie']['ae'], p1['aux']['ie']['ae']))
    self.assertFalse(changed(s2['aux_state']['ie']['batch_stats']['ae'],
                             s1['aux_state']['ie']['batch_stats']['ae']))  # AE BN in eval mode
    self.assertTrue(changed(p2['aux']['ie']['exp'], p1['aux']['ie']['exp']))
    self.assertTrue(changed(p2['student'], p1['student']))
    np.testing.assert_array_equal(s2['aux_state']['ie']['ie_split']['perm'], perm0)

  def test_ie_dml_online(self):
    specs = [dict(method='ie_dml', member=0, peer=1, name='ie_m0'),
             dict(method='ie_dml', member=1, peer=0, name='ie_m1')]
    info = _setup(True)[4]
    terms = api.resolve_terms(specs, info)
    self.assertEqual([t.name for t in terms], ['ie_m0', 'ie_m1'])
    # Alternating DML order, each member with its own term's modules.
    self.assertEqual(optim_lib.update_groups(step_lib.stage_needs(terms)),
                     ('(?:^student/member0/)|(?:^aux/ie_m0/)',
                      '(?:^student/member1/)|(?:^aux/ie_m1/)'))
    self.assertFalse(terms[0].needs_teacher)
    _, sv, _, _, _ = _setup(True)
    ctx = _context(cohort=True)
    aux = {'params': {}, **terms[0].init(jax.random.key(0), api.example_context(info))}
    loss, m, st = terms[0].loss(aux, ctx)
    self.assertIn('rec', m)
    np.testing.assert_allclose(m['ce'], _np_ce(np.asarray(ctx.student['member0/logits']),
                                               np.asarray(ctx.labels)), rtol=1e-5)
    np.testing.assert_allclose(loss, m['ce'] + 0.8 * m['rec'] + 50 * m['inh'] + 50 * m['exp'],
                               rtol=1e-5)
    self.assertIn('ae', st['batch_stats'])
    with self.assertRaisesRegex(ValueError, 'cohort'):
      api.build_term(dict(method='ie_dml'), _setup(False)[4])


def optax_norm(tree):
  return jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree)))


# ----------------------------------------------------------------------------
# Self-Guidance

class SelfGuidanceTest(absltest.TestCase):

  def test_loss_matches_numpy(self):
    rng = np.random.default_rng(0)
    zs, zt = rng.normal(size=(2, 5, 7)).astype(np.float32)
    y = np.array([0, 3, 6, 1, 2])
    loss, m = self_guidance_lib.self_guidance(zs, zt, y, lam=0.25, temperature=3.0)
    want = _np_ce(zs, y) + _np_ce(zt, y) + 0.25 * 9 * _np_kl(zt, zs, 3.0)
    np.testing.assert_allclose(loss, want, rtol=1e-5)
    loss0, _ = self_guidance_lib.self_guidance(zs, zt, y, lam=0.0)
    np.testing.assert_allclose(loss0, _np_ce(zs, y) + _np_ce(zt, y), rtol=1e-5)
    # stop_teacher: no gradient into the full-network logits.
    g = jax.grad(lambda t: self_guidance_lib.self_guidance(zs, t, y, stop_teacher=True)[0])(jnp.asarray(zt))
    np.testing.assert_array_equal(g, 0.0)
    g = jax.grad(lambda t: self_guidance_lib.self_guidance(zs, t, y)[0])(jnp.asarray(zt))
    self.assertGreater(float(jnp.abs(g).sum()), 0.0)

  def test_keep_mask_follows_survival_schedule(self):
    surv = jnp.asarray(models.survival_probs(9, 0.5))
    np.testing.assert_allclose(surv, 1 - np.arange(1, 10) / 9 * 0.5, rtol=1e-6)
    keys = jax.random.split(jax.random.key(0), 4000)
    masks = jax.vmap(lambda k: jax.random.bernoulli(k, surv))(keys)
    freq = np.asarray(masks.mean(0))
    tol = 4 * np.sqrt(np.asarray(surv) * (1 - np.asarray(surv)) / 4000) + 1e-3
    self.assertTrue(np.all(np.abs(freq - np.asarray(surv)) <= tol), (freq, surv))
    np.testing.assert_array_equal(self_guidance_lib.keep_mask(keys[0], surv), masks[0].astype(np.float32))

  def test_teacher_pass_is_expected_network_one_trace(self):
    s, sv, _, _, _ = _setup()
    surv = jnp.asarray(models.survival_probs(s.num_blocks, 0.5))
    term = _term(dict(method='self_guidance'))
    traces = []

    @jax.jit
    def run(key):
      traces.append(1)
      keep = self_guidance_lib.keep_mask(key, surv)
      ctx = _context(survival=surv, keep=keep)
      loss, m, _ = term.loss({'params': {}}, ctx)
      return loss, m, ctx.student['logits'], keep

    for i in range(4):
      loss, m, sub, keep = run(jax.random.key(i))
      (full, _), _ = s.apply(sv, _images(), train=True, mutable=['batch_stats'],
                             branch_scale=surv)
      want, _ = self_guidance_lib.self_guidance(sub, full, jnp.array([1, 2, 3, 4]))
      np.testing.assert_allclose(loss, want, rtol=1e-5)
    self.assertLen(traces, 1)
    self.assertEqual(term.needs.survival, tuple(float(p) for p in surv))
    self.assertTrue(term.needs.student_pass and term.needs.images)
    with self.assertRaisesRegex(ValueError, 'survival'):
      term.loss({'params': {}}, _context(survival=None))


# ----------------------------------------------------------------------------
# SRRL

class SRRLTest(absltest.TestCase):

  def test_losses_match_numpy(self):
    rng = np.random.default_rng(0)
    vs, vt = rng.normal(size=(2, 3, 4)).astype(np.float32)
    w, b = rng.normal(size=(4, 5)).astype(np.float32), rng.normal(size=5).astype(np.float32)
    zt = rng.normal(size=(3, 5)).astype(np.float32)
    y = np.array([0, 4, 2])
    np.testing.assert_allclose(srrl_lib.feature_matching(vs, vt), np.mean((vs - vt) ** 2), rtol=1e-6)
    z = srrl_lib.apply_teacher_head(vs, w, b)
    np.testing.assert_allclose(z, vs @ w + b, rtol=1e-5)
    np.testing.assert_allclose(srrl_lib.softmax_regression(z, zt), np.mean((vs @ w + b - zt) ** 2),
                               rtol=1e-5)
    np.testing.assert_allclose(srrl_lib.softmax_regression(z, zt, y, kind='ce'),
                               _np_ce(vs @ w + b, y), rtol=1e-5)
    np.testing.assert_allclose(srrl_lib.softmax_regression(z, zt, kind='kl', temperature=2.0),
                               4 * _np_kl(zt, vs @ w + b, 2.0), rtol=1e-5)

  def test_teacher_classifier_receives_no_update(self):
    term = _term(dict(method='srrl'))
    aux = _aux(term)
    self.assertEqual(sorted(aux['params']), ['bn', 'conv'])  # connector only
    self.assertNotIn('head', jax.tree_util.keystr(aux))
    ctx = _context()
    tv = ctx.teacher_variables

    def f(teacher_params, aux_params):
      c = api.Context(**{**ctx.__dict__, 'teacher_variables': {**tv, 'params': teacher_params}})
      return term.loss({**aux, 'params': aux_params}, c)[0]
    g_t, g_aux = jax.grad(f, argnums=(0, 1))(tv['params'], aux['params'])
    np.testing.assert_array_equal(g_t['head']['kernel'], 0.0)
    np.testing.assert_array_equal(g_t['head']['bias'], 0.0)
    self.assertGreater(float(optax_norm(g_aux)), 0.0)
    # The connector's 1x1 conv init std is sqrt(2 / C_t) (C_t = 64).
    k = np.asarray(_aux(term, seed=7)['params']['conv']['kernel'])
    self.assertEqual(k.shape, (1, 1, 64, 64))
    self.assertAlmostEqual(float(k.std()), np.sqrt(2 / 64), delta=0.02)


# ----------------------------------------------------------------------------
# IPWD and PS-KD

class IPWDTest(absltest.TestCase):

  def test_weights(self):
    y = np.array([0, 1, 2, 0])
    z_cls = np.zeros((4, 3), np.float32)
    z_kd = np.array([[3, 0, 0], [0, 2, 0], [0, 0, -2], [0, 1, 0]], np.float32)
    w = np.asarray(ipwd_lib.ipw_weights(z_kd, z_cls, y))
    lp_kd = _np_log_softmax(z_kd)[np.arange(4), y]
    lp_cls = _np_log_softmax(z_cls)[np.arange(4), y]
    pi = 1 / (1 + np.exp(-(lp_kd - lp_cls)))
    want = np.clip(1 / pi, 1, 10)
    np.testing.assert_allclose(w, want / want.mean(), rtol=1e-5)
    self.assertAlmostEqual(float(w.mean()), 1.0, places=5)
    # Samples the KD head explains worse than the CE head (2, 3) weigh more.
    self.assertGreater(min(w[2], w[3]), max(w[0], w[1]))
    w_ce = np.asarray(ipwd_lib.ipw_weights(z_kd, z_cls, y, estimator='ce_ratio', normalize=False))
    ce = lambda z: -_np_log_softmax(z)[np.arange(4), y]
    np.testing.assert_allclose(w_ce, np.clip(1 + ce(z_cls) / ce(z_kd), 1, 10), rtol=1e-5)

  def test_weighted_kd_and_no_gradient_through_weights(self):
    rng = np.random.default_rng(0)
    zs, zt, zc = rng.normal(size=(3, 4, 5)).astype(np.float32)
    y = np.array([0, 1, 2, 3])
    w = np.array([0.5, 1.0, 1.5, 1.0], np.float32)
    kl = np.sum(_np_softmax(zt / 4) * (_np_log_softmax(zt / 4) - _np_log_softmax(zs / 4)), -1)
    np.testing.assert_allclose(ipwd_lib.weighted_kd(zs, zt, w), 16 * np.mean(w * kl), rtol=1e-5)

    def inside(z):  # weights computed from the same logits inside the loss
      return ipwd_lib.weighted_kd(z, zt, ipwd_lib.ipw_weights(z, zc, y))
    w0 = ipwd_lib.ipw_weights(zs, zc, y)
    g_inside = jax.grad(inside)(jnp.asarray(zs))
    g_const = jax.grad(lambda z: ipwd_lib.weighted_kd(z, zt, w0))(jnp.asarray(zs))
    np.testing.assert_allclose(g_inside, g_const, rtol=1e-6)
    g_w = jax.grad(lambda c: jnp.sum(ipwd_lib.ipw_weights(jnp.asarray(zs), c, y)))(jnp.asarray(zc))
    np.testing.assert_array_equal(g_w, 0.0)

  def test_term(self):
    term = _term(dict(method='ipwd'))
    aux = _aux(term)
    ctx = _context()
    loss, m, _ = term.loss(aux, ctx)
    head = aux['params']['fc']
    pooled = np.asarray(ctx.student['pooled'])
    z_cls = pooled @ np.asarray(head['kernel']) + np.asarray(head['bias'])
    y = np.asarray(ctx.labels)
    w = np.asarray(ipwd_lib.ipw_weights(ctx.student['logits'], z_cls, y))
    zs, zt = np.asarray(ctx.student['logits']), np.asarray(ctx.teacher['logits'])
    kl = np.sum(_np_softmax(zt / 4) * (_np_log_softmax(zt / 4) - _np_log_softmax(zs / 4)), -1)
    np.testing.assert_allclose(loss, _np_ce(z_cls, y) + 0.9 * 16 * np.mean(w * kl), rtol=1e-4)
    # The extra head sees stop_gradient(pooled): its CE does not reach the student.
    g = jax.grad(lambda f: term.loss(aux, api.Context(**{**ctx.__dict__, 'student': {
        **ctx.student, 'pooled': f}}))[0])(ctx.student['pooled'])
    np.testing.assert_array_equal(g, 0.0)
    # Warm-up: weights are 1 before warmup_epochs.
    warm = _term(dict(method='ipwd', warmup_epochs=10.0))
    l_warm, m_warm, _ = warm.loss(aux, ctx)
    self.assertEqual(float(m_warm['w_max']), 1.0)

  def test_ipwd_star_cohort(self):
    term = _term(dict(method='ipwd', logits_feature='member0/logits',
                      cls_feature='member1/logits'), cohort=True)
    self.assertIsNone(term.init)
    ctx = _context(cohort=True)
    loss, m, _ = term.loss({'params': {}}, ctx)
    np.testing.assert_allclose(m['ce_cls'], _np_ce(np.asarray(ctx.student['member1/logits']),
                                                   np.asarray(ctx.labels)), rtol=1e-5)


class PSKDTest(absltest.TestCase):

  def test_targets_and_schedule(self):
    y = jnp.array([2, 0])
    prev = jnp.array([[0.2, 0.3, 0.5], [0.0, 0.0, 0.0]])
    np.testing.assert_allclose(pskd_lib.pskd_alpha(jnp.float32(0.3), 300, 0.8), 0.8 / 300, rtol=1e-6)
    np.testing.assert_allclose(pskd_lib.pskd_alpha(jnp.float32(299.5), 300, 0.8), 0.8, rtol=1e-6)
    t0 = pskd_lib.pskd_targets(y, prev, 0.5, 3, first_epoch=True)
    np.testing.assert_allclose(t0, np.eye(3)[[2, 0]])
    t1 = pskd_lib.pskd_targets(y, prev, 0.5, 3, first_epoch=False)
    np.testing.assert_allclose(t1, [[0.1, 0.15, 0.75], [1.0, 0.0, 0.0]], rtol=1e-6)
    z = np.array([[1.0, 2.0, 0.5], [0.0, -1.0, 1.0]], np.float32)
    np.testing.assert_allclose(pskd_lib.pskd_loss(z, t1),
                               -np.mean(np.sum(np.asarray(t1) * _np_log_softmax(z), -1)), rtol=1e-6)
    mem = pskd_lib.update_memory(jnp.zeros((5, 3)), jnp.array([4, 1]), z)
    np.testing.assert_allclose(mem[jnp.array([4, 1])], _np_softmax(z), rtol=1e-6)
    np.testing.assert_array_equal(mem[0], 0.0)

  def test_term_epoch0_targets_are_labels(self):
    term = _term(dict(method='pskd'))
    self.assertFalse(term.needs_teacher)
    aux = _aux(term)
    self.assertEqual(aux['pskd']['memory'].shape, (20, 10))
    # Fill the memory with junk: at epoch 0 the targets are the labels anyway.
    aux = {**aux, 'pskd': {'memory': jnp.full((20, 10), 0.1)}}
    ctx = _context(progress=0.4)
    loss, m, st = term.loss(aux, ctx)
    np.testing.assert_allclose(loss, _np_ce(np.asarray(ctx.student['logits']),
                                            np.asarray(ctx.labels)), rtol=1e-5)
    np.testing.assert_allclose(st['pskd']['memory'][ctx.index],
                               _np_softmax(np.asarray(ctx.student['logits'])), rtol=1e-5)
    np.testing.assert_allclose(m['alpha_t'], 0.8 * 1 / 4, rtol=1e-6)
    # IPWD on PS-KD with uniform weights (w_max = 1) is PS-KD exactly (+ the head's CE).
    ip = _term(dict(method='ipwd', teacher_source='pskd', w_max=1.0))
    self.assertFalse(ip.needs_teacher)
    ip_aux = _aux(ip)
    ctx = _context(progress=2.5)
    mem = jnp.asarray(_np_softmax(np.random.default_rng(0).normal(size=(20, 10))), jnp.float32)
    l_ps, _, _ = term.loss({**aux, 'pskd': {'memory': mem}}, ctx)
    l_ip, m_ip, _ = ip.loss({**ip_aux, 'pskd': {'memory': mem}}, ctx)
    targets = pskd_lib.pskd_targets(ctx.labels, mem[ctx.index], 0.8 * 3 / 4, 10)
    ent = -np.mean(np.sum(np.asarray(targets) * np.log(np.maximum(np.asarray(targets), 1e-12)), -1))
    np.testing.assert_allclose(l_ip - m_ip['ce_cls'], l_ps - ent, rtol=1e-4, atol=1e-5)


if __name__ == '__main__':
  absltest.main()


def test_linear_cka_matches_feature_space_formula_and_invariances():
  """IE-KD Table 6a's L1 + CKA: CKA = ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)."""
  rng = np.random.default_rng(0)
  x = rng.normal(size=(6, 2, 2, 3))
  y = rng.normal(size=(6, 2, 2, 3))
  xc = x.reshape(6, -1) - x.reshape(6, -1).mean(0)
  yc = y.reshape(6, -1) - y.reshape(6, -1).mean(0)
  want = (np.linalg.norm(yc.T @ xc) ** 2 /
          (np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc)))
  np.testing.assert_allclose(ie_kd_lib.linear_cka(jnp.asarray(x), jnp.asarray(y)), want, rtol=1e-5)
  np.testing.assert_allclose(ie_kd_lib.linear_cka(jnp.asarray(x), jnp.asarray(3.0 * x)), 1.0, rtol=1e-5)
  q, _ = np.linalg.qr(rng.normal(size=(12, 12)))
  rotated = (x.reshape(6, -1) @ q).reshape(x.shape)
  np.testing.assert_allclose(ie_kd_lib.linear_cka(jnp.asarray(rotated), jnp.asarray(y)), want, rtol=1e-4)
  l_inh, l_exp = ie_kd_lib.inheritance_exploration(jnp.asarray(x), jnp.asarray(y), jnp.asarray(x),
                                           metric='l1', exp_metric='cka')
  np.testing.assert_allclose(l_inh, 0.0, atol=1e-6)
  np.testing.assert_allclose(l_exp, want, rtol=1e-5)


def test_ipwd_dagger_kd_only_head_gives_the_propensity():
  """IPWD-dagger (IPWD appendix Table 4): a third head trained with plain KD only."""
  term = _term(dict(method='ipwd', dagger=True))
  aux = _aux(term)
  assert sorted(aux['params']) == ['cls', 'dagger']
  ctx = _context()
  loss, m, _ = term.loss(aux, ctx)
  pooled = np.asarray(ctx.student['pooled'])
  lin = lambda p: pooled @ np.asarray(p['fc']['kernel']) + np.asarray(p['fc']['bias'])
  z_cls, z_dag = lin(aux['params']['cls']), lin(aux['params']['dagger'])
  y = np.asarray(ctx.labels)
  zs, zt = np.asarray(ctx.student['logits']), np.asarray(ctx.teacher['logits'])
  kl = lambda z: np.sum(_np_softmax(zt / 4) * (_np_log_softmax(zt / 4) - _np_log_softmax(z / 4)), -1)
  lp = lambda z: _np_log_softmax(z)[np.arange(len(y)), y]
  pi = 1 / (1 + np.exp(-(lp(z_dag) - lp(z_cls))))  # propensity from (z_dag, z_cls), not z_kd
  w = np.clip(1 / pi, 1, 10)
  w = w / w.mean()
  want = _np_ce(z_cls, y) + 0.9 * 16 * np.mean(w * kl(zs)) + 0.9 * 16 * np.mean(kl(z_dag))
  np.testing.assert_allclose(loss, want, rtol=1e-4)
  np.testing.assert_allclose(m['kd_dagger'], 16 * np.mean(kl(z_dag)), rtol=1e-4)
  # The dagger head learns from KD only: no gradient from the labels' CE reaches it, and
  # neither extra head's loss reaches the student's pooled features.
  g = jax.grad(lambda p: term.loss({**aux, 'params': p}, ctx)[0])(aux['params'])
  g_lab = jax.grad(lambda p: term.loss({**aux, 'params': p}, api.Context(
      **{**ctx.__dict__, 'labels': jnp.asarray([0, 0, 0, 0])}))[0])(aux['params'])
  np.testing.assert_allclose(g['dagger']['fc']['kernel'], g_lab['dagger']['fc']['kernel'], atol=1e-6)
  assert float(jnp.abs(g['dagger']['fc']['kernel']).sum()) > 0
  g_f = jax.grad(lambda f: term.loss(aux, api.Context(**{**ctx.__dict__, 'student': {
      **ctx.student, 'pooled': f}}))[0])(ctx.student['pooled'])
  np.testing.assert_array_equal(g_f, 0.0)
