"""kdjax.analysis: CKA, NMI, t-SNE, PGD / FGSM, active neurons, sharpness, noise, probe, calibration."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import flax.linen as nn

from kdjax import models
from kdjax.analysis import adversarial, calibration, curves, probe, runs, sensitivity, similarity
from kdjax.train import metrics as metrics_lib


# ---------------------------------------------------------------- helpers

def np_cka(x, y, kernel='linear', sigma_frac=0.5):
  """Independent float64 reference: HSIC with an explicit centering matrix H."""
  x = np.asarray(x, np.float64).reshape(len(x), -1)
  y = np.asarray(y, np.float64).reshape(len(y), -1)
  n = len(x)
  h = np.eye(n) - np.ones((n, n)) / n

  def gram(a):
    if kernel == 'linear':
      return a @ a.T
    d2 = ((a[:, None, :] - a[None, :, :]) ** 2).sum(-1)
    med = np.median(d2[np.triu_indices(n, 1)])
    return np.exp(-d2 / (2 * sigma_frac ** 2 * med))

  k, l = gram(x), gram(y)
  hsic = lambda a, b: np.trace(a @ h @ b @ h)
  return hsic(k, l) / np.sqrt(hsic(k, k) * hsic(l, l))


def tiny_net(seed, label='net', arch='resnet8'):
  model = models.create(arch, 10)
  v = model.init(jax.random.key(seed), jnp.zeros((1, 8, 8, 1)), train=False)
  v = jax.tree.map(lambda a: a, dict(v))
  return runs.Net(label, arch, model, v, np.array([0.3], np.float32), np.array([0.4], np.float32))


class SmallCNN(nn.Module):
  """A fast-compiling stand-in for the attack / noise / sharpness tests."""

  @nn.compact
  def __call__(self, x, train=False):
    h = nn.relu(nn.Conv(8, (3, 3))(x))
    pooled = h.reshape(h.shape[0], -1)
    logits = nn.Dense(10)(pooled)
    return logits, {'pooled': pooled}


def small_net(seed, label='small'):
  model = SmallCNN()
  v = model.init(jax.random.key(seed), jnp.zeros((1, 8, 8, 1)))
  return runs.Net(label, 'small', model, {'params': v['params'], 'batch_stats': {}},
                  np.array([0.3], np.float32), np.array([0.4], np.float32))


def images(n=16, seed=0):
  r = np.random.default_rng(seed)
  return r.uniform(0, 1, (n, 8, 8, 1)).astype(np.float32), r.integers(0, 10, n).astype(np.int32)


# ---------------------------------------------------------------- CKA

def test_linear_cka_invariances_and_reference():
  r = np.random.default_rng(0)
  x = r.normal(size=(40, 12)).astype(np.float32)
  y = (x @ r.normal(size=(12, 7)) + 0.5 * r.normal(size=(40, 7))).astype(np.float32)
  q, _ = np.linalg.qr(r.normal(size=(12, 12)))
  assert float(similarity.linear_cka(x, x)) == pytest.approx(1.0, abs=1e-5)
  base = float(similarity.linear_cka(x, y))
  assert base == pytest.approx(np_cka(x, y), abs=1e-5)
  assert float(similarity.linear_cka(x @ q.astype(np.float32), y)) == pytest.approx(base, abs=1e-5)
  assert float(similarity.linear_cka(3.7 * x, y)) == pytest.approx(base, abs=1e-5)
  a = np.diag(np.linspace(0.1, 5, 12)).astype(np.float32) @ q.astype(np.float32)  # invertible, not orthogonal
  assert abs(float(similarity.linear_cka(x @ a, y)) - base) > 1e-2
  # The Gram form gives the same number.
  k, l = similarity.gram_linear(jnp.asarray(x)), similarity.gram_linear(jnp.asarray(y))
  assert float(similarity.cka_from_grams(k, l)) == pytest.approx(base, abs=1e-5)


def test_rbf_cka_reference_and_invariances():
  r = np.random.default_rng(1)
  x = r.normal(size=(30, 6)).astype(np.float32)
  y = np.tanh(x @ r.normal(size=(6, 5))).astype(np.float32)
  q, _ = np.linalg.qr(r.normal(size=(6, 6)))
  base = float(similarity.rbf_cka(x, y))
  assert base == pytest.approx(np_cka(x, y, 'rbf'), abs=1e-4)
  assert float(similarity.rbf_cka(x, x)) == pytest.approx(1.0, abs=1e-5)
  assert float(similarity.rbf_cka(2.5 * x @ q.astype(np.float32), y)) == pytest.approx(base, abs=1e-4)
  m = similarity.cka_layers({'a': x, 'b': y}, {'a': x, 'b': y}, 'rbf')
  assert m[0, 1] == pytest.approx(base, abs=1e-4) and m[1, 1] == pytest.approx(1.0, abs=1e-5)


def test_feature_distance_hand_value():
  ht = np.array([[0.0, 0.0], [1.0, 1.0]], np.float32)
  hs = np.array([[3.0, 4.0], [1.0, 2.0]], np.float32)
  assert float(similarity.feature_distance(ht, hs)) == pytest.approx((25 + 1) / 2)


# ---------------------------------------------------------------- NMI, t-SNE

def test_nmi_perfect_and_random():
  r = np.random.default_rng(0)
  labels = np.repeat(np.arange(4), 50)
  centers = 20 * r.normal(size=(4, 5))
  h = centers[labels] + r.normal(size=(200, 5))
  assert similarity.kmeans_nmi(h, labels) == pytest.approx(1.0)
  assert similarity.nmi(labels, (labels + 1) % 4) == pytest.approx(1.0)  # renaming clusters
  assert similarity.nmi(labels, r.integers(0, 4, 200)) < 0.05
  assert similarity.kmeans_nmi(r.normal(size=(200, 5)), labels) < 0.1


def test_tsne_shape_and_determinism():
  h = np.random.default_rng(0).normal(size=(30, 8))
  a, b = similarity.tsne(h, seed=3), similarity.tsne(h, seed=3)
  assert a.shape == (30, 2)
  np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------- PGD / FGSM

def test_pgd_ball_range_loss_and_fgsm():
  net = small_net(0)
  x, y = images()
  fn = net.logits_fn()
  loss = lambda z: sensitivity.ce_sum(fn(z), y)

  @jax.jit
  def all_at_once(x):  # one compile for everything below
    return (adversarial.pgd(fn, x, y, eps=0.031, step=0.01, iters=5), adversarial.fgsm(fn, x, y, eps=0.031),
            adversarial.pgd(fn, x, y, eps=0.031, step=0.031, iters=1), jax.grad(loss)(x), loss(x))
  adv, fgsm, one_step, g, clean = (np.asarray(a) for a in all_at_once(jnp.asarray(x)))
  assert np.all(np.abs(adv - x) <= 0.031 + 1e-6) and adv.min() >= 0 and adv.max() <= 1
  assert float(loss(jnp.asarray(adv))) > float(clean)
  # FGSM = clip(x + eps * sign(grad)) written out here, and = one PGD step of size eps.
  np.testing.assert_allclose(fgsm, np.clip(x + 0.031 * np.sign(g), 0, 1), atol=1e-6)
  np.testing.assert_array_equal(one_step, fgsm)


def related_nets(n=3, noise=0.2):
  """Net 0 and copies with perturbed weights: models that mostly agree, like students of one task."""
  base = small_net(0)
  p = jax.tree.map(lambda a: 4 * a, base.variables['params'])
  leaves, tree = jax.tree.flatten(p)
  nets = []
  for s in range(n):
    ks = jax.random.split(jax.random.key(s + 10), len(leaves))
    ws = [w + (0 if s == 0 else noise) * jnp.std(w) * jax.random.normal(k, w.shape) for w, k in zip(leaves, ks)]
    nets.append(runs.Net(f'n{s}', 'small', base.model, {'params': jax.tree.unflatten(tree, ws), 'batch_stats': {}},
                         base.mean, base.std))
  return nets


def test_self_attack_is_strongest_and_matrix_layout():
  nets = related_nets()
  x, _ = images(24, seed=1)
  y = np.asarray(nets[0](x)[0]).argmax(-1).astype(np.int32)  # net 0 is right on every image
  res = adversarial.transfer_matrix(nets, x, y, eps=0.1, step=0.02, iters=10)
  fn = nets[0].logits_fn()
  adv = jax.jit(lambda x: adversarial.pgd(fn, x, y, eps=0.1, step=0.02, iters=10))(x)
  accs = [float((np.asarray(n(adv)[0]).argmax(-1) == y).mean()) for n in nets]
  assert accs[0] <= min(accs[1:]) and accs[0] < 0.5
  s, c = np.asarray(res['success']), np.asarray(res['count'])
  assert c[0, 0] == len(x) and np.array_equal(c, c.T)
  assert s[0, 0] == pytest.approx(1.0 - accs[0])  # source 0 is correct on all: C_0 = everything
  assert s[0, 0] >= s[0, 1:].max() and res['clean_top1'][0] == 1.0



def test_transfer_matrix_is_the_definition_and_compiles_once_per_net():
  """success[s][t] written out per pair (PGD on the source, target errors on C_s ∩ C_t); a batch
  size that does not divide N changes nothing, and each net's forward compiles for one shape only
  (not once per subset size |C_s ∩ C_t|)."""
  nets = related_nets(3, noise=0.6)
  x, _ = images(24, seed=2)
  y = np.asarray(nets[1].apply(nets[1].variables, x)[0]).argmax(-1).astype(np.int32)  # not jitted
  y[:5] = (y[:5] + 1) % 10  # net 1 wrong on 5 images, the others on their own sets
  pred = lambda n, a: np.asarray(n(a)[0]).argmax(-1)
  res = adversarial.transfer_matrix(nets, x, y, eps=0.1, step=0.02, iters=5, batch_size=10)
  assert all(n._fn._cache_size() == 1 for n in nets)
  clean = [pred(n, x) == y for n in nets]
  want = np.full((3, 3), np.nan)
  for s, src in enumerate(nets):
    fn = src.logits_fn()
    adv = jax.jit(lambda a: adversarial.pgd(fn, a, jnp.asarray(y), eps=0.1, step=0.02, iters=5))(x)
    for t, tgt in enumerate(nets):
      both = clean[s] & clean[t]
      assert res['count'][s][t] == both.sum() > 0
      want[s, t] = (pred(tgt, adv)[both] != y[both]).mean()
  np.testing.assert_array_equal(res['success'], want)
  assert len({c for row in res['count'] for c in row}) > 1  # subsets of several sizes
  whole = adversarial.transfer_matrix(nets, x, y, eps=0.1, step=0.02, iters=5, batch_size=24)
  assert whole['success'] == res['success'] and whole['count'] == res['count']

# ---------------------------------------------------------------- active neurons, sharpness, noise

def test_active_neurons_hand_spectrum():
  lam = np.array([90.0, 6.0, 3.0, 1.0])
  g = np.diag(np.sqrt(4 * lam))  # C = G^T G / 4 = diag(lam)
  r, eig = sensitivity.active_neurons(g, threshold=0.05)
  np.testing.assert_allclose(eig, lam, rtol=1e-5)
  assert r == 2  # 90 + 6 >= 95
  assert sensitivity.active_neurons(g, threshold=0.02)[0] == 3
  low_rank = np.random.default_rng(0).normal(size=(50, 3)) @ np.random.default_rng(1).normal(size=(3, 40))
  assert sensitivity.active_neurons(low_rank, threshold=1e-4)[0] <= 3


def test_feature_loss_grads_match_full_model():
  net = tiny_net(0)
  x, y = images(4)
  g = np.asarray(sensitivity.feature_loss_grads(net, x, y, 3))
  h = net(x)[1]['stage3']
  # dL/dh through pool + head, written out: softmax(z) - onehot, spread over H*W.
  z = np.asarray(net(x)[0], np.float64)
  p = np.exp(z - z.max(-1, keepdims=True)); p /= p.sum(-1, keepdims=True)
  d = (p - np.eye(10)[y]) @ np.asarray(net.variables['params']['head']['kernel'], np.float64).T
  want = np.broadcast_to(d[:, None, None, :] / (h.shape[1] * h.shape[2]), h.shape)
  np.testing.assert_allclose(g, want, atol=1e-5)


def test_sharpness_scale_zero_is_clean_loss():
  net = small_net(0)
  x, y = images(8)
  bs = net.variables['batch_stats']
  loss_fn = lambda p: sensitivity.ce_sum(net.apply({'params': p, 'batch_stats': bs}, x)[0], y) / len(y)
  res = sensitivity.sharpness(loss_fn, net.variables['params'], [0.0, 0.5], draws=2)
  clean = float(jax.jit(loss_fn)(net.variables['params']))
  assert res['losses'][0] == [pytest.approx(clean, rel=1e-6)] * 2 and res['std'][0] < 1e-6
  assert res['mean'][1] != pytest.approx(clean, rel=1e-3)
  fn = sensitivity.sharpness(loss_fn, net.variables['params'], [0.0], 1, filter_normalized=True)
  assert fn['mean'][0] == pytest.approx(clean, rel=1e-6)


def test_input_noise_zero_sigma_is_clean():
  net = small_net(0)
  x, y = images(8)
  res = sensitivity.input_noise(net.logits_fn(), x, y, [0.0, 0.3])
  logits = np.asarray(net(x)[0])
  assert res['top1'][0] == pytest.approx(float((logits.argmax(-1) == y).mean()))
  assert res['loss'][0] == pytest.approx(metrics_lib.classification_metrics(logits, y)['loss'], rel=1e-5)


# ---------------------------------------------------------------- probe, calibration, curves

def test_linear_probe_separable():
  r = np.random.default_rng(0)
  w = r.normal(size=(16, 3))
  f = r.normal(size=(300, 16))
  yl = (f @ w).argmax(-1)
  res = probe.linear_probe(f[:200], yl[:200], f[200:], yl[200:], 3, steps=1500, weight_decay=0.0)
  assert res['train_top1'] == 1.0
  far = np.concatenate([r.normal(size=(50, 4)) + 10 * np.eye(4)[k] for k in range(4)])
  lab = np.repeat(np.arange(4), 50)
  assert probe.linear_probe(far, lab, far, lab, 4, steps=300)['top1'] == 1.0


def test_calibration_matches_trainer_metrics_and_hand_bins():
  r = np.random.default_rng(0)
  logits = (3 * r.normal(size=(200, 5))).astype(np.float32)
  y = r.integers(0, 5, 200)
  rel = calibration.reliability(logits, y, 15)
  assert rel['ece'] == pytest.approx(metrics_lib.expected_calibration_error(logits, y, 15), abs=1e-6)
  assert sum(rel['count']) == 200
  rc = calibration.risk_coverage(logits, y)
  assert rc['aurc'] == pytest.approx(metrics_lib.aurc(logits, y), abs=1e-9)
  # Two examples: confidences 0.85 (right) and 0.55 (wrong), two classes.
  lg = np.log(np.array([[0.85, 0.15], [0.55, 0.45]], np.float32))
  rel = calibration.reliability(lg, np.array([0, 1]), 10)
  assert rel['count'][8] == 1 and rel['count'][5] == 1  # (0.8, 0.9] and (0.5, 0.6]
  assert rel['ece'] == pytest.approx(0.5 * 0.15 + 0.5 * 0.55, abs=1e-5)
  assert calibration.risk_coverage(lg, np.array([0, 1]))['risk'] == pytest.approx([0.0, 0.5])


def test_curves_from_metrics_jsonl(tmp_path):
  recs = [{'step': 10, 'kind': 'train', 'loss/ce': 2.0, 'train_accuracy': 0.25},
          {'step': 20, 'kind': 'eval', 'epoch': 1.0, 'top1': 0.6, 'loss': 1.5},
          {'step': 30, 'kind': 'train', 'loss/ce': 1.0, 'train_accuracy': 0.75},
          {'step': 40, 'kind': 'eval', 'epoch': 2.0, 'top1': 0.8, 'loss': 0.9}]
  (tmp_path / 'metrics.jsonl').write_text('\n'.join(json.dumps(r) for r in recs))
  c = curves.read(str(tmp_path))
  assert c['train']['epoch'] == [0.5, 1.5] and c['train']['error'] == [0.75, 0.25]
  assert c['test']['error'] == pytest.approx([0.4, 0.2]) and c['test']['loss'] == [1.5, 0.9]
  with pytest.raises(FileNotFoundError, match='metrics.jsonl'):
    curves.read(str(tmp_path / 'nope'))


# ---------------------------------------------------------------- LRP

def randomized_bn(net, seed=0, zero_bias=False):
  """Random BN statistics / affine params so folding is exercised; zero_bias makes every folded bias 0."""
  r = np.random.default_rng(seed)

  def fix(path, a):
    name = jax.tree_util.keystr(path)
    if "'mean'" in name:
      return jnp.zeros_like(a) if zero_bias else jnp.asarray(0.1 * r.normal(size=a.shape), a.dtype)
    if "'var'" in name:
      return jnp.asarray(r.uniform(0.5, 2.0, a.shape), a.dtype)
    if "'scale'" in name:
      return jnp.asarray(r.uniform(0.5, 1.5, a.shape), a.dtype)
    if "'bias'" in name:
      return jnp.zeros_like(a) if zero_bias else jnp.asarray(0.1 * r.normal(size=a.shape), a.dtype)
    return a
  v = jax.tree_util.tree_map_with_path(fix, net.variables)
  return runs.Net(net.label, net.arch, net.model, v, net.mean, net.std)


def test_lrp_folded_forward_and_conservation():
  from kdjax.analysis import lrp
  x, _ = images(4)
  net = randomized_bn(tiny_net(0))
  xn = net.normalize(jnp.asarray(x))
  np.testing.assert_allclose(np.asarray(lrp.folded_forward(net.model, net.variables, xn)),
                             np.asarray(net(x)[0]), rtol=1e-4, atol=1e-4)
  # Without biases the epsilon rule (eps -> 0) conserves relevance at every layer:
  # logit, pooled, last_map, the 3 block inputs of resnet8, the input.
  nb = randomized_bn(tiny_net(0), zero_bias=True)
  target = np.array([1, 2, 3, 4])
  maps, sums = lrp.lrp(nb, x, target, eps=1e-9, return_sums=True)
  logit = np.asarray(nb(x)[0])[np.arange(4), target]
  assert sums.shape == (4, 1 + 1 + 1 + 3 + 1) and maps.shape == (4, 8, 8)
  np.testing.assert_allclose(sums, np.broadcast_to(logit[:, None], sums.shape), rtol=2e-3, atol=1e-4)
  np.testing.assert_allclose(maps.sum((1, 2)), logit, rtol=2e-3, atol=1e-4)
  # Relevance is linear in the last_map relevance: two channel halves add up to the whole.
  perm = np.random.default_rng(0).permutation(64)
  a = lrp.lrp(net, x, target, channels=perm[:32])
  b = lrp.lrp(net, x, target, channels=perm[32:])
  np.testing.assert_allclose(a + b, lrp.lrp(net, x, target), rtol=1e-4, atol=1e-5)


def test_gradient_x_input_matches_jacobian():
  # The map of class c is sum over channels of x * df_c/dx at x (from the full Jacobian).
  net = small_net(0)
  x, _ = images(2)
  w = np.asarray(jax.jacobian(lambda z: net(z[None])[0][0])(jnp.asarray(x[0])))  # [10, 8, 8, 1]
  got = lrp_mod().gradient_x_input(net, x[:1], np.array([3]))
  np.testing.assert_allclose(got[0], (x[0] * w[3]).sum(-1), rtol=1e-5, atol=1e-6)


def lrp_mod():
  from kdjax.analysis import lrp
  return lrp
