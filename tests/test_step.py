"""The generic step on a tiny model: term plumbing, declared needs, update groups, non-finite guard."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from kdjax import config as config_lib
from kdjax.distill import api
from kdjax.distill.api import Needs, Term, no_aux
from kdjax.models.cohort import Cohort
from kdjax.train import optim, step as step_lib


class Tiny(nn.Module):
  """Dense -> BN -> ReLU -> Dense, returning (logits, features) like kdjax models."""

  @nn.compact
  def __call__(self, x, *, train=False):
    h = nn.Dense(8, name='body')(x.reshape(x.shape[0], -1))
    h = nn.BatchNorm(use_running_average=not train, momentum=0.9, name='bn')(h)
    pooled = nn.relu(h)
    return nn.Dense(3, name='head')(pooled), {'pooled': pooled}


def _batch_fn(data, step, key):
  return data


def _data(n=6):
  rng = np.random.default_rng(0)
  return {'image': jnp.asarray(rng.normal(size=(n, 4)), jnp.float32),
          'label': jnp.asarray(rng.integers(0, 3, n), jnp.int32),
          'index': jnp.arange(n, dtype=jnp.int32)}


def _optim(**kw):
  o = config_lib.ConfigDict(config_lib.base_config().optim.to_dict())
  o.update(schedule='constant', lr=0.5, momentum=0.0, weight_decay=0.0, **kw)
  return o


def _state(model, tx, data):
  v = model.init(jax.random.key(0), data['image'], train=False)
  params = {'student': v['params'], 'aux': {}}
  return {'step': jnp.zeros((), jnp.int32), 'params': params, 'batch_stats': v['batch_stats'],
          'aux_state': {}, 'opt': tx.init(params)}


def _scfg(**kw):
  base = dict(seed=0, steps_per_epoch=1, stage_start_step=0, stage_epochs=1.0, ce_weight=1.0,
              num_classes=3)
  base.update(kw)
  return step_lib.StepConfig(**base)


ALTERNATE = {'member0': ('^student/member0/',), 'member1': ('^student/member1/',)}


def _mutual_term(groups=None):
  """Member 1 learns its CE plus KL towards member 0's (stop-gradient) prediction."""
  def loss(ctx):
    p0 = jax.nn.softmax(jax.lax.stop_gradient(ctx.student['member0/logits']))
    logp1 = jax.nn.log_softmax(ctx.student['member1/logits'])
    ce1 = optax.softmax_cross_entropy_with_integer_labels(ctx.student['member1/logits'], ctx.labels)
    return jnp.mean(ce1) + jnp.mean(jnp.sum(p0 * (jnp.log(p0) - logp1), -1))
  return Term(name='mutual', method='test', weight=1.0, loss=no_aux(loss), needs_teacher=False,
              needs=Needs(update_groups=groups or {}))


def _tx(o, params, terms):
  groups = optim.update_groups(step_lib.stage_needs(terms))
  return optim.make_tx(o, optim.learning_rate(o, 1, 1), params, update_groups=groups)


@pytest.mark.slow
def test_update_groups_use_the_updated_first_network():
  data = _data()
  model = Cohort((Tiny(), Tiny()))
  terms = [_mutual_term(ALTERNATE)]
  o = _optim()
  probe = _state(model, optax.identity(), data)
  tx = _tx(o, probe['params'], terms)
  state = _state(model, tx, data)
  fn = step_lib.make_train_step(student=model, teacher=None, terms=terms, tx=tx,
                                batch_fn=_batch_fn, cfg=_scfg())
  new, _ = jax.jit(fn)(state, {}, data)

  # By hand: member 0 steps on its own CE; member 1 then steps against the
  # *updated* member 0, with batch statistics from the second forward pass.
  def total(params, bs):
    (lg, ft), upd = model.apply({'params': params, 'batch_stats': bs}, data['image'], train=True,
                                mutable=['batch_stats'])
    ft = {**ft, 'logits': lg}
    ce0 = optax.softmax_cross_entropy_with_integer_labels(lg, data['label']).mean()
    p0 = jax.nn.softmax(jax.lax.stop_gradient(ft['member0/logits']))
    logp1 = jax.nn.log_softmax(ft['member1/logits'])
    ce1 = optax.softmax_cross_entropy_with_integer_labels(ft['member1/logits'], data['label']).mean()
    return ce0 + ce1 + jnp.mean(jnp.sum(p0 * (jnp.log(p0) - logp1), -1)), upd['batch_stats']

  p, bs = state['params']['student'], state['batch_stats']
  g, bs = jax.grad(total, has_aux=True)(p, bs)
  p = dict(p)
  p['member0'] = jax.tree.map(lambda w, d: w - 0.5 * d, p['member0'], g['member0'])
  g, bs = jax.grad(total, has_aux=True)(p, bs)
  p['member1'] = jax.tree.map(lambda w, d: w - 0.5 * d, p['member1'], g['member1'])
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6),
               new['params']['student'], p)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6),
               new['batch_stats'], bs)


def test_simultaneous_update_differs_from_alternating():
  data = _data()
  model = Cohort((Tiny(), Tiny()))
  o = _optim()
  probe = _state(model, optax.identity(), data)
  outs = []
  for groups in (None, ALTERNATE):
    terms = [_mutual_term(groups)]
    tx = _tx(o, probe['params'], terms)
    fn = step_lib.make_train_step(student=model, teacher=None, terms=terms, tx=tx,
                                  batch_fn=_batch_fn, cfg=_scfg())
    outs.append(jax.jit(fn)(_state(model, tx, data), {}, data)[0]['params']['student'])
  # Member 0's first update is the same; member 1 sees a different member 0.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), outs[0]['member0'],
               outs[1]['member0'])
  assert not np.allclose(outs[0]['member1']['head']['kernel'], outs[1]['member1']['head']['kernel'])


def test_non_finite_loss_leaves_state_untouched():
  data = _data()
  model = Tiny()
  o = _optim()
  probe = _state(model, optax.identity(), data)
  tx = optim.make_tx(o, optim.learning_rate(o, 1, 1), probe['params'])
  nan_term = Term(name='nan', method='test', weight=1.0,
                  loss=no_aux(lambda ctx: jnp.log(-jnp.abs(ctx.student['logits']).sum() - 1.0)),
                  needs_teacher=False)
  fn = step_lib.make_train_step(student=model, teacher=None, terms=[nan_term], tx=tx,
                                batch_fn=_batch_fn, cfg=_scfg())
  state = _state(model, tx, data)
  before = jax.tree.map(np.asarray, state)
  new, m = jax.jit(fn)(state, {}, data)
  assert not np.isfinite(float(m['loss/total'])) and int(new['step']) == 1
  for key in ('params', 'batch_stats', 'opt'):
    jax.tree.map(np.testing.assert_array_equal, new[key], before[key])


def test_teacher_gets_no_gradient_and_sees_the_same_batch():
  """The teacher is an argument of the step: KD gradients flow only into the student."""
  data = _data()
  student, teacher = Tiny(), Tiny()
  tvars = teacher.init(jax.random.key(7), data['image'])
  seen = {}

  def loss(ctx):
    seen['same_images'] = ctx.images is not None
    s = jax.nn.log_softmax(ctx.student['logits'])
    t = jax.nn.softmax(ctx.teacher['logits'])
    return jnp.mean(jnp.sum(t * (jnp.log(t) - s), -1))

  term = Term(name='kd', method='test', weight=1.0, loss=no_aux(loss), needs=Needs(images=True))
  o = _optim()
  probe = _state(student, optax.identity(), data)
  tx = optim.make_tx(o, optim.learning_rate(o, 1, 1), probe['params'])
  fn = step_lib.make_train_step(student=student, teacher=teacher, terms=[term], tx=tx,
                                batch_fn=_batch_fn, cfg=_scfg(ce_weight=0.0))
  # Differentiating the whole step w.r.t. the teacher's variables gives zeros.
  def through(tv):
    new, m = fn(_state(student, tx, data), tv, data)
    return m['loss/total'] + sum(jnp.sum(x) for x in jax.tree.leaves(new['params']))
  g = jax.jit(jax.grad(through))(tvars)
  assert all(float(jnp.abs(x).max()) == 0.0 for x in jax.tree.leaves(g))
  assert seen['same_images']


def _probe_term(needs=Needs(), seen=None):
  """A zero loss that records what its Context holds."""
  def loss(ctx):
    if seen is not None:
      seen.update(images=ctx.images, index=ctx.index, apply_student=ctx.apply_student,
                  apply_teacher=ctx.apply_teacher, teacher_variables=ctx.teacher_variables,
                  survival=ctx.survival)
    return jnp.zeros(()), {'teacher_logits': ctx.teacher['logits'] if ctx.teacher else jnp.zeros(())}
  return Term(name='probe', method='test', weight=1.0, loss=no_aux(loss), needs_teacher=False,
              needs=needs)


def test_context_holds_only_declared_capabilities():
  data = _data()
  student, teacher = Tiny(), Tiny()
  tvars = teacher.init(jax.random.key(7), data['image'])
  o = _optim()
  probe = _state(student, optax.identity(), data)
  tx = optim.make_tx(o, optim.learning_rate(o, 1, 1), probe['params'])
  full = Needs(images=True, index=True, teacher_variables=True, student_pass=True,
               teacher_pass=True)
  for needs in (Needs(), full):
    seen = {}
    fn = step_lib.make_train_step(student=student, teacher=teacher, terms=[_probe_term(needs, seen)],
                                  tx=tx, batch_fn=_batch_fn, cfg=_scfg())
    jax.jit(fn)(_state(student, tx, data), tvars, data)
    if needs == full:
      assert all(v is not None for k, v in seen.items() if k != 'survival'), seen
    else:
      assert all(v is None for v in seen.values()), seen


def test_teacher_batch_statistics_when_declared():
  """OFD's official teacher: BN on batch statistics, running statistics not updated."""
  data = _data()
  student, teacher = Tiny(), Tiny()
  tvars = teacher.init(jax.random.key(7), data['image'])
  tvars = {'params': tvars['params'],
           'batch_stats': jax.tree.map(lambda a: a + 3.0, tvars['batch_stats'])}
  o = _optim()
  probe = _state(student, optax.identity(), data)
  tx = optim.make_tx(o, optim.learning_rate(o, 1, 1), probe['params'])
  got = {}
  for batch_stats in (False, True):
    term = _probe_term(Needs(teacher_batch_stats=batch_stats))
    fn = step_lib.make_train_step(student=student, teacher=teacher, terms=[term], tx=tx,
                                  batch_fn=_batch_fn, cfg=_scfg())
    got[batch_stats] = np.asarray(jax.jit(fn)(_state(student, tx, data), tvars, data)[1][
        'probe/teacher_logits'])
  (want_train, _) = teacher.apply(tvars, data['image'], train=True, mutable=['batch_stats'])[0]
  want_eval, _ = teacher.apply(tvars, data['image'], train=False)
  np.testing.assert_allclose(got[True], want_train, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(got[False], want_eval, rtol=1e-5, atol=1e-6)
  assert not np.allclose(got[True], got[False])


def test_merge_needs_unions_and_names_term_groups():
  a = Needs(images=True, update_groups={'member0': ('^student/member0/', '^aux/{term}/')})
  b = Needs(index=True, update_groups={'member0': ('^aux/{term}/',),
                                       'member1': ('^student/member1/',)})
  merged = api.merge_needs([a.for_term('ie_m0'), b.for_term('ie_m1')])
  assert merged.images and merged.index and not merged.student_eval
  assert dict(merged.update_groups) == {
      'member0': ('^student/member0/', '^aux/ie_m0/', '^aux/ie_m1/'),
      'member1': ('^student/member1/',)}
  assert optim.update_groups(merged)[1] == '(?:^student/member1/)'
  with pytest.raises(ValueError, match='survival'):
    api.merge_needs([Needs(survival=(1.0, 0.5)), Needs(survival=(1.0, 0.75))])
  assert api.merge_needs([Needs(survival=(1.0, 0.5)), Needs()]).survival == (1.0, 0.5)


def test_student_in_eval_mode_keeps_batch_statistics():
  """A term declaring student_eval (FT's paraphraser, IE-KD's auto-encoder
  pretraining) makes the student use and keep the running BN statistics."""
  data = _data()
  model = Tiny()
  o = _optim()
  probe = _state(model, optax.identity(), data)
  tx = optim.make_tx(o, optim.learning_rate(o, 1, 1), probe['params'])
  outs = {}
  for mode in (True, False):
    term = _probe_term(Needs(student_eval=not mode))
    fn = step_lib.make_train_step(student=model, teacher=None, terms=[term], tx=tx,
                                  batch_fn=_batch_fn, cfg=_scfg())
    state = _state(model, tx, data)
    outs[mode] = jax.jit(fn)(state, {}, data)[0]['batch_stats']
  before = _state(model, tx, data)['batch_stats']
  jax.tree.map(np.testing.assert_array_equal, outs[False], before)
  assert not np.allclose(outs[True]['bn']['mean'], before['bn']['mean'])


def test_compute_dtype_from_config():
  """'float32' (or no key) adds no model kwarg, so float32 runs build the same models."""
  from kdjax.train import setup as setup_lib
  assert setup_lib.compute_dtype(config_lib.ConfigDict({})) == {}
  assert setup_lib.compute_dtype(config_lib.ConfigDict({'dtype': 'float32'})) == {}
  assert setup_lib.compute_dtype(config_lib.ConfigDict({'dtype': 'bfloat16'})) == {
      'dtype': jnp.bfloat16}
  with pytest.raises(ValueError, match='float16'):
    setup_lib.compute_dtype(config_lib.ConfigDict({'dtype': 'float16'}))
