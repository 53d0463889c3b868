"""DOT optimizer against a float64 numpy re-implementation of mdistiller's update."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from kdjax.train import dot


class NumpyDOT:
  """mdistiller's DistillationOrientedTrainer step, in numpy: buffers start as None and
  are set to the first gradient; a parameter without a gradient (None) is skipped."""

  def __init__(self, lr, momentum, momentum_kd, weight_decay):
    self.lr, self.m, self.m_kd, self.wd = lr, momentum, momentum_kd, weight_decay
    self.buf, self.buf_kd = {}, {}

  def step(self, params, g_task, g_kd):
    for name, d in g_task.items():  # task gradients (None = no grad)
      if d is None:
        continue
      d = d + self.wd * params[name]
      if name not in self.buf:
        self.buf[name] = d.copy()
      elif g_kd.get(name) is not None:
        self.buf[name] = self.buf[name] * self.m + d
      else:
        self.buf[name] = self.buf[name] * ((self.m_kd + self.m) / 2) + d
      params[name] = params[name] - self.lr * self.buf[name]
    for name, d in g_kd.items():
      if d is None:
        continue
      if name not in self.buf_kd:
        self.buf_kd[name] = d.copy()
      elif g_task.get(name) is not None:
        self.buf_kd[name] = self.buf_kd[name] * self.m_kd + d
      else:
        d = d + self.wd * params[name]
        self.buf_kd[name] = self.buf_kd[name] * ((self.m_kd + self.m) / 2) + d
      params[name] = params[name] - self.lr * self.buf_kd[name]
    return params


def test_dot_matches_mdistiller_update_over_three_steps():
  jax.config.update('jax_enable_x64', True)
  try:
    rng = np.random.default_rng(0)
    params = {'shared': rng.normal(size=(3, 2)), 'head': rng.normal(size=(2,)),
              'conn': rng.normal(size=(4,))}
    task_mask = {'shared': True, 'head': True, 'conn': False}
    kd_mask = {'shared': True, 'head': False, 'conn': True}
    lrs = [0.1, 0.1, 0.05]
    schedule = lambda count: jnp.asarray(lrs)[count]
    tx = dot.dot_sgd(schedule, momentum=0.9, delta=0.075, weight_decay=5e-4,
                     task_mask=task_mask, kd_mask=kd_mask)
    state = tx.init(jax.tree.map(jnp.asarray, params))
    update = jax.jit(tx.update)
    ref = {k: v.copy() for k, v in params.items()}
    p = jax.tree.map(jnp.asarray, params)
    for step in range(3):
      g_t = {k: rng.normal(size=v.shape) for k, v in params.items()}
      g_k = {k: rng.normal(size=v.shape) for k, v in params.items()}
      opt = NumpyDOT(lrs[step], 0.9 - 0.075, 0.9 + 0.075, 5e-4) if step == 0 else opt
      opt.lr = lrs[step]
      ref = opt.step(ref, {k: (g if task_mask[k] else None) for k, g in g_t.items()},
                     {k: (g if kd_mask[k] else None) for k, g in g_k.items()})
      updates, state = update(dot.DOTGrads(g_t, g_k), state, p)
      p = optax.apply_updates(p, updates)
      for k in params:
        np.testing.assert_allclose(np.asarray(p[k]), ref[k], rtol=1e-12, atol=1e-14)
  finally:
    jax.config.update('jax_enable_x64', False)


def test_dot_with_zero_delta_and_no_kd_gradient_is_sgd_momentum():
  rng = np.random.default_rng(1)
  params = {'w': jnp.asarray(rng.normal(size=(5,)), jnp.float32)}
  tx = dot.dot_sgd(0.1, momentum=0.9, delta=0.0, weight_decay=1e-3)
  ref_tx = optax.chain(optax.add_decayed_weights(1e-3), optax.trace(0.9),
                       optax.scale_by_learning_rate(0.1))
  s, rs = tx.init(params), ref_tx.init(params)
  p = rp = params
  for _ in range(3):
    g = {'w': jnp.asarray(rng.normal(size=(5,)), jnp.float32)}
    u, s = tx.update(dot.DOTGrads(g, jax.tree.map(jnp.zeros_like, g)), s, p)
    ru, rs = ref_tx.update(g, rs, rp)
    p, rp = optax.apply_updates(p, u), optax.apply_updates(rp, ru)
  np.testing.assert_allclose(np.asarray(p['w']), np.asarray(rp['w']), rtol=1e-6)


def test_dot_rejects_bad_input():
  with pytest.raises(ValueError, match='momentum'):
    dot.dot_sgd(0.1, momentum=0.9, delta=0.2)
  tx = dot.dot_sgd(0.1)
  params = {'w': jnp.ones(2)}
  with pytest.raises(TypeError, match='DOTGrads'):
    tx.update(params, tx.init(params), params)


def test_dot_value_and_grads_matches_two_backward_passes():
  def fn(p, x):
    h = jnp.tanh(x @ p['w'])
    return (jnp.mean(h ** 2), jnp.mean(jnp.sin(h) * p['b'])), {'h_mean': jnp.mean(h)}
  rng = np.random.default_rng(2)
  p = {'w': jnp.asarray(rng.normal(size=(3, 2)), jnp.float32), 'b': jnp.ones(2)}
  x = jnp.asarray(rng.normal(size=(4, 3)), jnp.float32)
  (task, kd), aux, grads = jax.jit(lambda p, x: dot.dot_value_and_grads(fn, p, x))(p, x)
  g_task = jax.grad(lambda p: fn(p, x)[0][0])(p)
  g_kd = jax.grad(lambda p: fn(p, x)[0][1])(p)
  for k in p:
    np.testing.assert_allclose(np.asarray(grads.task[k]), np.asarray(g_task[k]), rtol=1e-5,
                               atol=1e-7)
    np.testing.assert_allclose(np.asarray(grads.kd[k]), np.asarray(g_kd[k]), rtol=1e-5,
                               atol=1e-7)
  np.testing.assert_allclose(float(task), float(fn(p, x)[0][0]), rtol=1e-6)
  assert 'h_mean' in aux


# --- DOT through the real train step -------------------------------------------------------


class _Tiny(nn.Module):
  """Dense -> BN -> ReLU -> Dense, returning (logits, features) like kdjax models."""

  @nn.compact
  def __call__(self, x, *, train=False):
    h = nn.Dense(8, name='body')(x)
    h = nn.BatchNorm(use_running_average=not train, momentum=0.9, name='bn')(h)
    pooled = nn.relu(h)
    return nn.Dense(3, name='head')(pooled), {'pooled': pooled}


def _conn_loss(aux, ctx, logits=True):
  """A distillation term with a kd-only connector `aux/probe/w` (through pooled), like a
  feature method's regressor; with `logits` it also reaches the classifier `head`."""
  reg = jnp.mean((ctx.student['pooled'] @ aux['params']['w'] - 1.0) ** 2)
  return reg + (0.1 * jnp.mean(ctx.student['logits'] ** 2) if logits else 0.0), {}, {}


def _feature_loss(aux, ctx):
  return _conn_loss(aux, ctx, logits=False)


def _dot_setup(loss=_conn_loss, **optim_kw):
  from kdjax import config as config_lib
  from kdjax.distill.api import Term
  from kdjax.train import optim, step as step_lib
  rng = np.random.default_rng(3)
  data = {'image': jnp.asarray(rng.normal(size=(6, 4)), jnp.float32),
          'label': jnp.asarray(rng.integers(0, 3, 6), jnp.int32),
          'index': jnp.arange(6, dtype=jnp.int32)}
  model = _Tiny()
  v = model.init(jax.random.key(0), data['image'], train=False)
  params = {'student': v['params'],
            'aux': {'probe': {'w': jnp.asarray(rng.normal(size=(8, 2)), jnp.float32)}}}
  o = config_lib.ConfigDict(config_lib.base_config().optim.to_dict())
  o.update({**dict(schedule='constant', lr=0.1, momentum=0.9, weight_decay=5e-4), **optim_kw})
  tx = optim.make_tx(o, optim.learning_rate(o, 1, 1), params)
  term = Term(name='probe', method='test', weight=0.7, loss=loss, needs_teacher=False)
  cfg = step_lib.StepConfig(seed=0, steps_per_epoch=1, stage_start_step=0, stage_epochs=1.0,
                            ce_weight=0.3, num_classes=3)
  step = jax.jit(step_lib.make_train_step(student=model, teacher=None,
                                          terms=[term] if loss is not None else [], tx=tx,
                                          batch_fn=lambda d, s, k: d, cfg=cfg))
  state = {'step': jnp.zeros((), jnp.int32), 'params': params, 'batch_stats': v['batch_stats'],
           'aux_state': {}, 'opt': tx.init(params)}
  return model, data, step, state


@pytest.mark.parametrize('loss', [pytest.param(_conn_loss, marks=pytest.mark.slow), _feature_loss])
def test_dot_optimizer_in_the_train_step_matches_mdistiller_over_three_steps(loss):
  """_feature_loss does not reach `head`: PyTorch sees grad None there and mdistiller
  uses the mean momentum for it; the step finds that from the traced backward pass."""
  model, data, step, state = _dot_setup(loss, name='dot', dot_delta=0.075)

  def parts(params):
    (lg, ft), _ = model.apply({'params': params['student'], 'batch_stats': state['batch_stats']},
                              data['image'], train=True, mutable=['batch_stats'])
    ce = optax.softmax_cross_entropy_with_integer_labels(lg, data['label']).mean()
    ctx = type('C', (), {'student': {**ft, 'logits': lg}})
    return 0.3 * ce, 0.7 * loss({'params': params['aux']['probe']}, ctx)[0]

  flat = lambda t: {optim_path(k): np.asarray(x, np.float64)
                    for k, x in jax.tree_util.tree_flatten_with_path(t)[0]}
  ref = flat(state['params'])
  opt = NumpyDOT(0.1, 0.9 - 0.075, 0.9 + 0.075, 5e-4)
  for _ in range(3):
    p32 = jax.tree_util.tree_unflatten(jax.tree.structure(state['params']),
                                       [jnp.asarray(ref[k], jnp.float32) for k in ref])
    g_t = flat(jax.grad(lambda p: parts(p)[0])(p32))
    g_k = flat(jax.grad(lambda p: parts(p)[1])(p32))
    # The CE reaches only the student; PyTorch sees None for the connector's task grad.
    g_t = {k: (g if k.startswith('student/') else None) for k, g in g_t.items()}
    if loss is _feature_loss:
      assert not np.any(g_k['student/head/kernel'])
      g_k = {k: (None if k.startswith('student/head/') else g) for k, g in g_k.items()}
    ref = opt.step(ref, g_t, g_k)
    state, metrics = step(state, None, data)
  got = flat(state['params'])
  assert set(got) == set(ref) and 'aux/probe/w' in got
  for k in ref:
    # atol: body/bias sits before BN, its true gradient is 0 and float32 noise ~1e-6
    np.testing.assert_allclose(got[k], ref[k], rtol=2e-5, atol=1e-5, err_msg=k)
  # Plain SGD from the same start moves differently (the two momenta matter).
  _, _, sgd_step, sgd_state = _dot_setup(loss, name='sgd')
  for _ in range(3):
    sgd_state, _ = sgd_step(sgd_state, None, data)
  assert not np.allclose(np.asarray(sgd_state['params']['student']['head']['kernel']),
                         got['student/head/kernel'], atol=1e-6)
  assert np.isfinite(float(metrics['grad_norm']))


def test_dot_zero_delta_in_the_step_equals_sgd_momentum():
  # delta = 0 makes both buffers use the base momentum; sum of buffers = SGD's one buffer
  # (except the kd-only connector, which skips weight decay on its first step, as mdistiller).
  _, data, dstep, dstate = _dot_setup(name='dot', dot_delta=0.0, weight_decay=0.0)
  _, _, sstep, sstate = _dot_setup(name='sgd', weight_decay=0.0)
  for _ in range(3):
    dstate, _ = dstep(dstate, None, data)
    sstate, _ = sstep(sstate, None, data)
  for a, b in zip(jax.tree.leaves(dstate['params']), jax.tree.leaves(sstate['params'])):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_dot_config_errors_before_compile():
  from kdjax import config as config_lib
  from kdjax.train import optim
  params = {'student': {'w': jnp.ones(2)}, 'aux': {}}
  o = config_lib.ConfigDict(config_lib.base_config().optim.to_dict())
  o.update(name='dot', nesterov=True)
  with pytest.raises(ValueError, match='Nesterov'):
    optim.make_tx(o, 0.1, params)
  o.update(nesterov=False, name='dott')
  with pytest.raises(ValueError, match="unknown optim.name 'dott'"):
    optim.make_tx(o, 0.1, params)
  o.update(name='dot')
  with pytest.raises(ValueError, match='update groups'):
    optim.make_tx(o, 0.1, {'student': {'a': jnp.ones(1), 'b': jnp.ones(1)}, 'aux': {}},
                  update_groups=('a', 'b'))


def optim_path(path):
  from kdjax.train import optim
  return optim.path_str(path)


def test_reached_finds_structurally_zero_gradients():
  def loss(p, x):
    h = jnp.tanh(x @ p['a'])
    return jnp.sum(h) + jnp.sum(jax.lax.stop_gradient(p['b']) * 0.0 + p['c'] * 0.0)
  p = {'a': jnp.ones((3, 2)), 'b': jnp.ones(2), 'c': jnp.ones(2), 'd': jnp.ones(())}
  flags = dot.reached(loss, p, jnp.ones((4, 3)))
  # 'c' is reached (times zero is still a path, as in PyTorch); 'b' is cut; 'd' is unused.
  assert flags == {'a': True, 'b': False, 'c': True, 'd': False}


def test_dot_without_distillation_terms_is_exactly_sgd():
  # No term reaches any parameter: every leaf is task-only and uses the mean momentum
  # (= optim.momentum), which is PyTorch SGD; the connector gets no gradient at all.
  _, data, dstep, dstate = _dot_setup(None, name='dot', dot_delta=0.075)
  _, _, sstep, sstate = _dot_setup(None, name='sgd')
  for _ in range(3):
    dstate, _ = dstep(dstate, None, data)
    sstate, _ = sstep(sstate, None, data)
  for a, b in zip(jax.tree.leaves(dstate['params']['student']),
                  jax.tree.leaves(sstate['params']['student'])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # PyTorch skips a parameter whose grad is None (no decay either); so does DOT.
  w0 = _dot_setup(None, name='dot')[3]['params']['aux']['probe']['w']
  np.testing.assert_array_equal(np.asarray(dstate['params']['aux']['probe']['w']), np.asarray(w0))
