"""SSKD (Xu et al. 2020): each loss component against a float64 numpy reference
written here from the official code's train loop, the rank-based selection on
hand-made ranks, the SS module's size against its PyTorch definition, and a
two-stage run (teacher SS head, then the student) through the real loop."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kdjax.distill.api import BuildInfo, Context, build_term
from kdjax.distill.methods import sskd


# ----------------------------------------------------------------------------
# float64 references (the official `student.py` loop, rotation-major rows)

def np_log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def np_kl_batchmean(s, t, tau, rows=None):
  """F.kl_div(log_softmax(s/tau)[rows], softmax(t/tau)[rows], 'batchmean') * tau^2."""
  ls, lt = np_log_softmax(s / tau), np_log_softmax(t / tau)
  kl = (np.exp(lt) * (lt - ls)).sum(-1)
  if rows is not None:
    kl = kl[rows]
  return tau * tau * kl.mean()


def np_cos(a, b):
  """F.cosine_similarity of every row of a with every row of b: [len(a), len(b)]."""
  na = np.linalg.norm(a, axis=-1)[:, None]
  nb = np.linalg.norm(b, axis=-1)[None, :]
  return a @ b.T / np.maximum(na * nb, 1e-8)


def np_kept_rows(scores, target, ratio):
  """Official error-level ranking: sorted indices of the rows kept."""
  order = np.argsort(-scores, axis=1, kind='stable')
  rank = np.argmax(order == target[:, None], axis=1)
  index = np.argsort(rank, kind='stable')
  wrong = np.count_nonzero(rank)
  keep = len(rank) - wrong + int(wrong * ratio)
  return np.sort(index[:keep])


def _arrays(n=4, k=5, ds=6, dt=7, seed=0):
  r = np.random.default_rng(seed)
  return (r.normal(size=(4 * n, k)) * 2, r.normal(size=(4 * n, k)) * 2,
          r.normal(size=(4 * n, ds)), r.normal(size=(4 * n, dt)), r.integers(0, k, n))


def test_each_component_matches_float64_reference():
  s_lg, t_lg, s_emb, t_emb, labels = _arrays()
  n = len(labels)
  hp = dict(kd_temperature=4.0, tf_temperature=3.0, ss_temperature=0.5, ratio_tf=0.5,
            ratio_ss=0.75)
  out = sskd.sskd_losses(jnp.asarray(s_lg, jnp.float32), jnp.asarray(t_lg, jnp.float32),
                         jnp.asarray(s_emb, jnp.float32), jnp.asarray(t_emb, jnp.float32),
                         jnp.asarray(labels), **hp)
  kd = np_kl_batchmean(s_lg[:n], t_lg[:n], 4.0)
  tf_rows = np_kept_rows(t_lg[n:], np.tile(labels, 3), 0.5)
  tf = np_kl_batchmean(s_lg[n:], t_lg[n:], 3.0, tf_rows)
  s_simi, t_simi = np_cos(s_emb[n:], s_emb[:n]), np_cos(t_emb[n:], t_emb[:n])
  ss_rows = np_kept_rows(t_simi, np.tile(np.arange(n), 3), 0.75)
  ss = np_kl_batchmean(s_simi, t_simi, 0.5, ss_rows)
  # The example must exercise the selection: some rows are dropped by each rule.
  assert 0 < len(tf_rows) < 3 * n and 0 < len(ss_rows) < 3 * n
  np.testing.assert_allclose(float(out['kd']), kd, rtol=2e-5)
  np.testing.assert_allclose(float(out['tf']), tf, rtol=2e-5)
  np.testing.assert_allclose(float(out['ss']), ss, rtol=2e-5)
  assert round(float(out['tf_kept']) * 3 * n, 4) == len(tf_rows)
  assert round(float(out['ss_kept']) * 3 * n, 4) == len(ss_rows)
  assert float(out['ss_acc']) == np.float32(np.mean(s_simi.argmax(-1) == np.tile(np.arange(n), 3)))


def test_zero_when_student_equals_teacher():
  _, t_lg, _, t_emb, labels = _arrays(dt=6)
  t_lg, t_emb = jnp.asarray(t_lg, jnp.float32), jnp.asarray(t_emb, jnp.float32)
  out = sskd.sskd_losses(t_lg, t_lg, t_emb, t_emb, jnp.asarray(labels))
  for k in ('kd', 'tf', 'ss'):
    assert abs(float(out[k])) < 1e-6, (k, out[k])


def test_teacher_phase_loss_matches_reference():
  _, _, _, t_emb, _ = _arrays()
  n = 4
  value, acc = sskd.teacher_ss_loss(jnp.asarray(t_emb, jnp.float32), n)
  simi = np_cos(t_emb[n:], t_emb[:n])
  target = np.tile(np.arange(n), 3)
  ref = -np_log_softmax(simi)[np.arange(3 * n), target].mean()
  np.testing.assert_allclose(float(value), ref, rtol=1e-5)
  assert float(acc) == np.float32(np.mean(simi.argmax(-1) == target))


def test_rank_based_selection_by_hand():
  # Target ranks: class 2 has one score above it, class 1 none, class 0 two.
  scores = jnp.array([[0.1, 0.5, 0.3]] * 3)
  np.testing.assert_array_equal(sskd.target_rank(scores, jnp.array([2, 1, 0])), [1, 0, 2])
  rank = jnp.array([0, 2, 1, 0, 1, 3])  # 2 correct, 4 wrong
  keep = lambda r: np.asarray(sskd.keep_mask(rank, r)).tolist()
  assert keep(0.0) == [True, False, False, True, False, False]   # correct rows only
  assert keep(0.5) == [True, False, True, True, True, False]     # + the 2 of rank 1
  assert keep(0.75) == [True, True, True, True, True, False]     # + floor(3) -> rank 2 too
  assert keep(1.0) == [True] * 6
  # Ties in rank: the lower row wins; floor(3 * 0.5) = 1 wrong row kept.
  assert np.asarray(sskd.keep_mask(jnp.array([0, 1, 1, 1]), 0.5)).tolist() == [
      True, True, False, False]


def test_rotations_are_np_rot90():
  x = np.arange(2 * 3 * 3 * 1, dtype=np.float32).reshape(2, 3, 3, 1)
  r = np.asarray(sskd.rotations(jnp.asarray(x)))
  for k in range(4):
    np.testing.assert_array_equal(r[2 * k:2 * k + 2], np.rot90(x, k, axes=(1, 2)))
  with pytest.raises(ValueError, match='square'):
    sskd.rotations(jnp.zeros((2, 3, 4, 1)))


def test_no_gradient_into_the_teacher_and_one_compile_per_shape():
  s_lg, t_lg, s_emb, t_emb, labels = map(jnp.asarray, _arrays())
  s_lg, t_lg, s_emb, t_emb = (a.astype(jnp.float32) for a in (s_lg, t_lg, s_emb, t_emb))
  traces = []

  def total(s_lg, t_lg, s_emb, t_emb, labels):
    traces.append(1)
    o = sskd.sskd_losses(s_lg, t_lg, s_emb, t_emb, labels)
    return o['kd'] + o['tf'] + o['ss']

  g = jax.jit(jax.grad(total, argnums=(0, 1, 2, 3)))
  gs, gt, ges, get = g(s_lg, t_lg, s_emb, t_emb, labels)
  assert float(jnp.abs(gt).sum()) == 0.0 and float(jnp.abs(get).sum()) == 0.0
  assert float(jnp.abs(gs).sum()) > 0.0 and float(jnp.abs(ges).sum()) > 0.0
  g(s_lg + 1.0, t_lg, s_emb, t_emb, labels)
  assert len(traces) == 1
  g(s_lg[:8], t_lg[:8], s_emb[:8], t_emb[:8], labels[:2])
  assert len(traces) == 2


def test_ss_head_parameter_count_matches_the_official_definition():
  torch = pytest.importorskip('torch')
  for d in (64, 256):
    ref = torch.nn.Sequential(torch.nn.Linear(d, d), torch.nn.ReLU(), torch.nn.Linear(d, d))
    want = sum(p.numel() for p in ref.parameters())
    params = sskd.SSHead().init(jax.random.key(0), jnp.zeros((2, d)))['params']
    assert sum(x.size for x in jax.tree.leaves(params)) == want == 2 * (d * d + d)


def _term_setup(phase, n=4, k=5, hw=4):
  """The term with tiny linear 'networks' standing in for the student and the teacher."""
  r = np.random.default_rng(1)
  ws = jnp.asarray(r.normal(size=(hw * hw, k + 6)), jnp.float32)
  wt = jnp.asarray(r.normal(size=(hw * hw, k + 7)), jnp.float32)

  def net(w, x):
    h = x.reshape(x.shape[0], -1) @ w
    return h[:, :k], {'pooled': h[:, k:], 'logits': h[:, :k]}

  shapes = lambda d: {'logits': jax.ShapeDtypeStruct((n, k), jnp.float32),
                      'pooled': jax.ShapeDtypeStruct((n, d), jnp.float32)}
  info = BuildInfo(student_shapes=shapes(6), teacher_shapes=shapes(7), num_classes=k, num_train=n)
  (term,) = build_term(dict(method='sskd', phase=phase), info)
  images = jnp.asarray(r.normal(size=(n, hw, hw, 1)), jnp.float32)
  labels = jnp.asarray(r.integers(0, k, n))
  _, t_feats = net(wt, images)
  _, s_feats = net(ws, images)
  ctx = Context(student=s_feats, teacher=t_feats, labels=labels, rng=jax.random.key(0),
                progress=jnp.zeros(()), stage_epochs=1.0, train=True, num_classes=k,
                images=images, apply_student=lambda x: net(ws, x),
                apply_teacher=lambda x: net(wt, x))
  aux = term.init(jax.random.key(2), ctx)
  return term, aux, ctx, (ws, wt, net)


@pytest.mark.slow
def test_term_trains_only_its_phase_head():
  term, aux, ctx, (ws, wt, net) = _term_setup('distill')
  assert term.needs.student_pass and term.needs.teacher_pass and term.needs.images
  grads = jax.grad(lambda p: term.loss({'params': p}, ctx)[0])(aux['params'])
  norm = lambda t: sum(float(jnp.abs(x).sum()) for x in jax.tree.leaves(t))
  assert norm(grads['teacher_head']) == 0.0 and norm(grads['student_head']) > 0.0
  # The term's value is the weighted sum of the pure components on the 4N batch.
  x4 = sskd.rotations(ctx.images)
  (s_lg, s_f), (t_lg, t_f) = net(ws, x4), net(wt, x4)
  emb = lambda name, f: sskd.SSHead().apply({'params': aux['params'][name]}, f)
  parts = sskd.sskd_losses(s_lg, t_lg, emb('student_head', s_f['pooled']),
                           emb('teacher_head', t_f['pooled']), ctx.labels)
  value, metrics, _ = term.loss(aux, ctx)
  np.testing.assert_allclose(float(value), float(0.9 * parts['kd'] + 2.7 * parts['tf']
                                                 + 10.0 * parts['ss']), rtol=1e-5)
  assert set(metrics) >= {'kd', 'tf', 'ss', 'ss_acc'}

  term, aux, ctx, _ = _term_setup('teacher_ss')
  assert term.needs.student_eval and not term.needs.student_pass
  grads = jax.grad(lambda p: term.loss({'params': p}, ctx)[0])(aux['params'])
  assert norm(grads['teacher_head']) > 0.0 and norm(grads['student_head']) == 0.0


def test_bad_hyperparameters_fail_before_compile():
  shapes = {'logits': jax.ShapeDtypeStruct((2, 3), jnp.float32),
            'pooled': jax.ShapeDtypeStruct((2, 4), jnp.float32),
            'stage1': jax.ShapeDtypeStruct((2, 4, 4, 4), jnp.float32)}
  info = BuildInfo(student_shapes=shapes, teacher_shapes=shapes, num_classes=3, num_train=2)
  with pytest.raises(ValueError, match='phase'):
    build_term(dict(method='sskd', phase='teacher'), info)
  with pytest.raises(ValueError, match='ratio_ss'):
    build_term(dict(method='sskd', ratio_ss=1.5), info)
  with pytest.raises(ValueError, match='flat'):
    build_term(dict(method='sskd', student_feature='stage1'), info)


# ----------------------------------------------------------------------------
# Two stages through the real loop: teacher SS head, then the student.

@pytest.mark.slow  # resnet20 teacher + three compiles: ~40 s of CPU time
def test_two_stage_sskd_trains_on_digits(tmp_path):
  from kdjax.config import import_module
  from kdjax.train import loop
  recipes = import_module('common')
  tdir = str(tmp_path / 'teacher')
  t = recipes.digits('resnet20')
  t.progress_bar = False
  assert loop.train_and_evaluate(t, tdir, stop_after_steps=1)['interrupted']
  cfg = recipes.student('digits', 'resnet20', 'resnet8', {}, ce_weight=0.1)
  cfg.teacher.checkpoint = tdir
  cfg.progress_bar = False
  cfg.log_every_steps = 1
  cfg.optim.batch_size = 16
  spe = 1437 // 16
  with cfg.unlocked():
    cfg.stages = (
        dict(name='teacher_ss', epochs=2 / spe, trainable=('^aux/sskd/teacher_head/',),
             optim=dict(lr=0.05, schedule='constant'),
             distill=dict(ce_weight=0.0, terms={'sskd': dict(method='sskd', phase='teacher_ss')})),
        dict(name='main', epochs=2 / spe, trainable=('^student/', '^aux/sskd/student_head/'),
             distill=dict(ce_weight=0.1, terms={'sskd': dict(method='sskd')})),
    )
  loop.train_and_evaluate(cfg, str(tmp_path / 's'))
  records = [json.loads(l) for l in open(os.path.join(tmp_path, 's', 'metrics.jsonl'))]
  train = [r for r in records if r['kind'] == 'train']
  assert any('sskd/ss_acc' in r and 'sskd/kd' not in r for r in train)   # teacher phase
  last = train[-1]
  assert {'sskd/kd', 'sskd/tf', 'sskd/ss'} <= set(last), last
  assert all(np.isfinite(last[k]) for k in ('loss/total', 'sskd/kd', 'sskd/tf', 'sskd/ss'))
