"""Self-Guidance sub-network masks: parsing, features of masked networks, the masked t-SNE command.

The stochastic-depth run is a finished-looking workdir (a self_guidance config,
a metrics.jsonl and one checkpoint whose weights are a seeded init plus noise): restoring it goes
through `kdjax eval`'s path, so the survival probabilities are the run's own.
"""

import argparse
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kdjax import config as config_lib
from kdjax import models
from kdjax.analysis import cli, masks, plots, runs, similarity
from kdjax.config import import_module
from kdjax.train import checkpoint as ckpt_lib
from kdjax.train import optim, setup as setup_lib, step as step_lib

recipes = import_module('common')
ARCH, BLOCKS = 'resnet14', 6  # 2 blocks per stage


def _sg_cfg(method='self_guidance'):
  cfg = recipes.digits(ARCH)
  cfg.progress_bar = False
  cfg.distill.ce_weight = 0.0 if method == 'self_guidance' else 1.0
  cfg.distill.terms = {method: dict(method=method, final_survival_prob=0.5)}
  return cfg


def _write_run(workdir, cfg):
  """config.json + one checkpoint (step 3) with perturbed weights and BN statistics."""
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    f.write(config_lib.to_json(cfg))
  setup = setup_lib.build(cfg)
  v = setup_lib.init_variables(setup)
  leaves, tree = jax.tree.flatten(v['params']['student'])
  keys = jax.random.split(jax.random.key(7), len(leaves))
  v['params']['student'] = jax.tree.unflatten(
      tree, [a + 0.1 * jax.random.normal(k, a.shape) for a, k in zip(leaves, keys)])
  v['batch_stats'] = jax.tree.map(lambda a: a + 0.05, v['batch_stats'])
  tx, _ = optim.stage_tx(setup, 0, v['params'])
  state = {**v, 'step': jnp.asarray(3, jnp.int32), 'opt': tx.init(v['params'])}
  ck = ckpt_lib.Checkpointer(os.path.join(workdir, 'checkpoints'), asynchronous=False)
  ck.save(3, state)
  ck.close()
  with open(os.path.join(workdir, 'metrics.jsonl'), 'w') as f:  # what the loop logs, for `curves`
    f.write('{"step": 2, "kind": "train", "loss/ce": 2.3, "train_accuracy": 0.1}\n'
            '{"step": 3, "kind": "eval", "epoch": 0.1, "top1": 0.1, "loss": 2.3}\n')
  return setup


@pytest.fixture(scope='module')
def sg_run(tmp_path_factory):
  d = str(tmp_path_factory.mktemp('sg'))
  setup = _write_run(d, _sg_cfg())
  nets, ds = runs.load(d)
  return d, setup, nets[0], ds


# ---------------------------------------------------------------- parsing

def test_parse_masks_values_and_names():
  p = models.survival_probs(4, 0.5)  # [0.875, 0.75, 0.625, 0.5]
  ms = masks.parse_masks('full,expected,1011,drop:2,random:2', 4, p, seed=0)
  names = [n for n, _ in ms]
  assert names[:3] == ['full', 'expected', '1011'] and len(ms) == 6
  np.testing.assert_array_equal(ms[0][1], [1, 1, 1, 1])
  np.testing.assert_array_equal(ms[1][1], np.float32([0.875, 0.75, 0.625, 0.5]))
  np.testing.assert_array_equal(ms[2][1], [1, 0, 1, 1])
  drop = ms[3][1]
  assert drop.sum() == 2 and set(np.unique(drop)) <= {0.0, 1.0}
  assert names[3] == f'drop2 {masks.bits(drop)}'
  for i, (name, m) in enumerate(ms[4:], 1):
    assert set(np.unique(m)) <= {0.0, 1.0} and name == f'random{i} {masks.bits(m)}'
  # Names stay unique (they key the JSON and the panels), also when masks repeat.
  rep = [n for n, _ in masks.parse_masks('full,1111,full,random:30', 4, p, seed=0)]
  assert rep[:3] == ['full', '1111', 'full (2)'] and len(set(rep)) == len(rep) == 33
  # Same spec and seed: same masks; another seed: other random draws (over 50 draws of 4 bits).
  again = masks.parse_masks('full,expected,1011,drop:2,random:2', 4, p, seed=0)
  for (a, x), (b, y) in zip(ms, again):
    assert a == b
    np.testing.assert_array_equal(x, y)
  r0 = np.stack([m for _, m in masks.parse_masks('random:50', 4, p, seed=0)])
  r1 = np.stack([m for _, m in masks.parse_masks('random:50', 4, p, seed=1)])
  assert not np.array_equal(r0, r1)


def test_random_masks_follow_the_survival_probabilities():
  p = models.survival_probs(4, 0.5)
  r = np.stack([m for _, m in masks.parse_masks('random:4000', 4, p, seed=3)])
  # Bernoulli(p_l) keep rates; 4000 draws: std <= 0.008, so 0.03 is > 3.5 sigma.
  np.testing.assert_allclose(r.mean(0), p, atol=0.03)
  d = np.stack([m for _, m in masks.parse_masks(','.join(['drop:1'] * 400), 4, p, seed=3)])
  assert (d.sum(1) == 3).all()
  np.testing.assert_allclose(d.mean(0), 0.75, atol=0.07)  # the dropped block is uniform


@pytest.mark.parametrize('spec,survival,match', [
    ('101', True, r"'101' has 3 digits but .* has 4 residual blocks"),
    ('10110', True, r'has 5 digits'),
    ('expected', False, r'needs the stochastic-depth survival probabilities'),
    ('random:2', False, r'not trained with stochastic depth'),
    ('drop:5', True, r'K must be an integer in 0..4'),
    ('random:0', True, r'K must be an integer in 1..'),
    ('random:x', True, r'K must be an integer'),
    ('half', True, r"unknown mask 'half'"),
    (' , ', True, r'--masks is empty'),
])
def test_parse_masks_errors(spec, survival, match):
  p = models.survival_probs(4, 0.5) if survival else None
  with pytest.raises(ValueError, match=match):
    masks.parse_masks(spec, 4, p, arch='resnet')


def test_parse_masks_needs_residual_blocks():
  with pytest.raises(ValueError, match='no residual blocks'):
    masks.parse_masks('full', 0, None, arch='vgg8')
  masks.check_syntax('full,expected,random:3,drop:1,0101')
  with pytest.raises(ValueError, match="unknown mask 'rand:3'"):
    masks.check_syntax('full,rand:3')


# ---------------------------------------------------------------- features

def test_loaded_run_is_the_deployed_expected_network(sg_run):
  _, setup, net, ds = sg_run
  p = models.survival_probs(BLOCKS, 0.5)
  assert net.num_blocks == BLOCKS
  np.testing.assert_array_equal(net.survival, p)
  x, _ = runs.test_arrays(ds, 24)
  eval_fn = jax.jit(step_lib.make_eval_fn(setup.student, setup.survival))
  xn = net.normalize(x)
  want = np.asarray(eval_fn(net.variables['params'], net.variables['batch_stats'], xn)['logits'])
  np.testing.assert_allclose(np.asarray(net(x)[0]), want, rtol=1e-5, atol=1e-5)
  logits, feats = masks.masked_outputs(net, x, [p], batch_size=10)
  assert logits.shape == (1, 24, 10) and feats.shape == (1, 24, 64)
  np.testing.assert_allclose(logits[0], want, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(feats[0], np.asarray(net(x)[1]['pooled']), rtol=1e-5, atol=1e-5)


def test_full_mask_is_the_plain_network_exactly(sg_run):
  _, _, net, ds = sg_run
  x, _ = runs.test_arrays(ds, 24)
  xn = net.normalize(x)
  # Op by op (no jit), scaling every branch by 1.0 is bitwise the unscaled network.
  with jax.disable_jit():
    want_logits, want = net.model.apply(net.variables, xn, train=False)
    got_logits, got = net.model.apply(net.variables, xn, train=False,
                                      branch_scale=jnp.ones(BLOCKS))
  np.testing.assert_array_equal(np.asarray(got['pooled']), np.asarray(want['pooled']))
  np.testing.assert_array_equal(np.asarray(got_logits), np.asarray(want_logits))
  # The jitted masked pass agrees to float32 rounding (XLA fuses the two programs differently).
  logits, feats = masks.masked_outputs(net, x, [np.ones(BLOCKS)], batch_size=24)
  np.testing.assert_allclose(feats[0], np.asarray(want['pooled']), rtol=1e-6, atol=1e-5)
  np.testing.assert_allclose(logits[0], np.asarray(want_logits), rtol=1e-6, atol=1e-5)
  # ... and that network is not the deployed one (the test above would be vacuous otherwise).
  assert np.abs(feats[0] - np.asarray(net(x)[1]['pooled'])).max() > 1e-3


def test_dropping_blocks_changes_features_as_the_residual_formula_says(sg_run):
  _, _, net, ds = sg_run
  x, _ = runs.test_arrays(ds, 16)
  one_off = np.ones(BLOCKS, np.float32)
  one_off[-1] = 0.0
  ms = [np.ones(BLOCKS), one_off, np.zeros(BLOCKS), np.full(BLOCKS, 1e-3)]
  _, f = masks.masked_outputs(net, x, ms, batch_size=7)
  assert f.shape == (4, 16, 64)
  assert np.abs(f[0] - f[1]).max() > 1e-3 and np.abs(f[0] - f[2]).max() > 1e-3
  # Zero-ish scales approach the all-dropped network continuously (scale 1e-3: close, not equal).
  gap = np.abs(f[3] - f[2]).max()
  assert 0 < gap < 0.05 * np.abs(f[0] - f[2]).max()
  # The residual formula: the last block's pre-ReLU sum is shortcut(x_in) + s_L * f_L(x_in) and
  # x_in does not depend on s_L, so it is affine in s_L: preact(0.5) = (preact(0) + preact(1)) / 2.
  half = one_off.copy()
  half[-1] = 0.5
  _, pre = masks.masked_outputs(net, x, [one_off, np.ones(BLOCKS), half], feature='stage3_preact')
  assert pre.shape == (3, 16, 2 * 2 * 64)  # 8x8 digits: stage 3 is 2x2x64
  np.testing.assert_allclose(pre[2], (pre[0] + pre[1]) / 2, rtol=1e-5, atol=1e-5)
  assert np.abs(pre[1] - pre[0]).max() > 1e-2


def test_lrp_explains_the_deployed_network(sg_run):
  """LRP folds p_l into each branch's last conv: its forward is the expected network, and
  without biases relevance is still conserved layer to layer (the epsilon rule's property)."""
  from kdjax.analysis import lrp
  _, _, net, ds = sg_run
  x, _ = runs.test_arrays(ds, 3)
  xn = net.normalize(jnp.asarray(x))
  s = jnp.asarray(net.survival)
  np.testing.assert_allclose(np.asarray(lrp.folded_forward(net.model, net.variables, xn, s)),
                             np.asarray(net(x)[0]), rtol=1e-4, atol=1e-4)
  nb = runs.Net(net.label, net.arch, net.model, jax.tree_util.tree_map_with_path(
      lambda p, a: jnp.zeros_like(a) if "'bias'" in str(p) or "'mean'" in str(p) else a,
      net.variables), net.mean, net.std, survival=net.survival, num_blocks=BLOCKS)
  target = np.array([1, 2, 3])
  maps, sums = lrp.lrp(nb, x, target, eps=1e-9, return_sums=True)
  logit = np.asarray(nb(x)[0])[np.arange(3), target]
  assert sums.shape == (3, 3 + BLOCKS + 1) and maps.shape == (3, 8, 8)
  np.testing.assert_allclose(sums, np.broadcast_to(logit[:, None], sums.shape), rtol=2e-3, atol=1e-4)


def test_active_neurons_refuse_a_stochastic_depth_net(sg_run):
  from kdjax.analysis import sensitivity
  _, _, net, ds = sg_run
  x, y = runs.test_arrays(ds, 4)
  with pytest.raises(ValueError, match='stochastic-depth network are not available'):
    sensitivity.feature_loss_grads(net, x, y, 1)


def test_masked_outputs_shape_error(sg_run):
  _, _, net, ds = sg_run
  x, _ = runs.test_arrays(ds, 4)
  with pytest.raises(ValueError, match=r'needs \[M, 6\]'):
    masks.masked_outputs(net, x, [np.ones(3)])


def test_tsne_joint_shapes_and_determinism():
  r = np.random.default_rng(0)
  a, b = r.normal(size=(30, 5)), r.normal(size=(20, 5)) + 3
  pa, pb = similarity.tsne_joint([a, b], seed=1)
  assert pa.shape == (30, 2) and pb.shape == (20, 2)
  qa, qb = similarity.tsne_joint([a, b], seed=1)
  np.testing.assert_array_equal(pa, qa)
  np.testing.assert_array_equal(pb, qb)
  with pytest.raises(ValueError, match='one dimension'):
    similarity.tsne_joint([a, r.normal(size=(5, 4))])


# ---------------------------------------------------------------- the command

def _parse(argv):
  p = argparse.ArgumentParser()
  cli.add_arguments(p)
  return p.parse_args(argv)


@pytest.mark.slow  # sklearn t-SNE twice plus the run: ~45 s on 2 cores
def test_cli_masked_tsne_writes_json_and_figures(sg_run, tmp_path):
  d, _, net, ds = sg_run
  out = str(tmp_path / 'out')
  args = _parse(['tsne', d, '--out', out, '--cka_examples', '40', '--masks', 'expected,110011'])
  assert cli.run(args) == 0
  res = json.load(open(os.path.join(out, 'tsne.json')))
  sub = res['subnetworks']['nets'][net.label]
  assert list(sub) == ['expected', '110011'] and not res['subnetworks']['joint_embedding']
  np.testing.assert_allclose(sub['expected']['branch_scale'], models.survival_probs(BLOCKS, 0.5))
  assert sub['110011']['active_blocks'] == 4 and sub['110011']['branch_scale'] == [1, 1, 0, 0, 1, 1]
  x, y = runs.test_arrays(ds, 40)
  assert sub['expected']['top1'] == float((np.asarray(net(x)[0]).argmax(-1) == y).mean())
  for r in sub.values():
    assert 0 <= r['kmeans_nmi'] <= 1
  figs = [os.path.join(out, f'{n}.{e}') for n in ('tsne', 'tsne_subnetworks_0') for e in ('png', 'pdf')]
  for f in figs:
    assert os.path.getsize(f) > 1000
  h, w = plots.image_check(figs[2])
  assert h > 50 and w > 2 * 150  # two panels side by side
  assert open(figs[3], 'rb').read(5) == b'%PDF-'


@pytest.mark.slow
def test_cli_all_includes_subnetwork_tsne_and_is_deterministic(sg_run, tmp_path):
  d, _, net, _ = sg_run
  outs = []
  for k in range(2):
    out = str(tmp_path / f'out{k}')
    cli.run(_parse(['tsne', d, '--out', out, '--cka_examples', '30', '--seed', '3', '--tsne_joint',
                    '--masks', 'full,random:2']))
    outs.append(json.load(open(os.path.join(out, 'tsne.json')))['subnetworks'])
  assert outs[0] == outs[1] and outs[0]['joint_embedding']
  out = str(tmp_path / 'all')
  assert cli.run(_parse(['all', d, '--out', out, '--cka_examples', '30', '--num_examples', '30',
                         '--iters', '2', '--draws', '1', '--noise_scales', '0,0.01',
                         '--sigmas', '0,0.1'])) == 0
  sub = json.load(open(os.path.join(out, 'tsne.json')))['subnetworks']['nets'][net.label]
  assert list(sub)[:2] == ['expected', 'full'] and len(sub) == 2 + 3  # cli.DEFAULT_MASKS
  assert '![tsne_subnetworks_0.png](tsne_subnetworks_0.png)' in open(os.path.join(out, 'index.md')).read()
  active = json.load(open(os.path.join(out, 'active.json')))
  assert active[net.label].startswith('skipped: stochastic depth')


def test_cli_mask_errors_come_before_compiling(sg_run, tmp_path, monkeypatch):
  d, _, _, _ = sg_run
  calls = []
  monkeypatch.setattr(masks, 'masked_outputs', lambda *a, **k: calls.append(1))
  with pytest.raises(ValueError, match="unknown mask 'sub3'"):
    cli.run(_parse(['tsne', d, '--masks', 'full,sub3']))
  with pytest.raises(ValueError, match='--masks is used by'):
    cli.run(_parse(['cka', d, '--masks', 'full']))
  with pytest.raises(ValueError, match=r"'1111' has 4 digits but .* has 6 residual blocks"):
    cli.run(_parse(['tsne', d, '--out', str(tmp_path), '--masks', 'full,1111']))
  assert not calls and not os.path.exists(tmp_path / 'tsne.json')


@pytest.mark.slow
def test_trained_self_guidance_run_expected_mask_is_what_the_trainer_evaluated(tmp_path):
  """A real Self-Guidance run (resnet8, digits, 1 epoch): the `expected` sub-network's test top-1
  is the trainer's final evaluation; the all-ones network is another network."""
  from kdjax.train import loop
  cfg = _sg_cfg()
  cfg.model.name = 'resnet8'
  cfg.epochs, cfg.eval_every_epochs, cfg.checkpoint_every_epochs = 1, 1, 1
  cfg.optim.batch_size = 128
  d = str(tmp_path / 'sg')
  loop.train_and_evaluate(cfg, d)
  final = json.load(open(os.path.join(d, 'results.json')))['final']['top1']
  (net,), ds = runs.load(d)
  x, y = runs.test_arrays(ds)
  ms = masks.parse_masks('expected,full', net.num_blocks, net.survival)
  logits, _ = masks.masked_outputs(net, x, [m for _, m in ms])
  top1 = (logits.argmax(-1) == y).mean(1)
  assert top1[0] == pytest.approx(final, abs=1e-9)
  assert np.abs(logits[0] - logits[1]).max() > 1e-3
  out = str(tmp_path / 'out')
  assert cli.run(_parse(['tsne', d, '--out', out, '--cka_examples', '30', '--masks', 'expected,random:2'])) == 0
  assert os.path.getsize(os.path.join(out, 'tsne_subnetworks_0.png')) > 1000
