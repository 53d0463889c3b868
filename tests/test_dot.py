"""DOT optimizer against a float64 numpy re-implementation of mdistiller's update."""

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
