"""`runs.load` on IE-KD and DML workdirs: the IE run's own channel split, cohort members' logits.

The IE-KD run is a finished-looking workdir (teacher and student written the way
`test_analysis_masks.py` writes an untrained run) whose checkpoint holds a channel
permutation that differs from the one the run's seed draws at init, so only reading
the checkpoint gives the split the test expects. The slow tests train real runs.
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
from kdjax.analysis import cli, runs
from kdjax.config import import_module
from kdjax.train import checkpoint as ckpt_lib
from kdjax.train import inputs, optim, setup as setup_lib, step as step_lib

recipes = import_module('common')
RATIO = 0.25  # not the default 0.5: n_inh must come from the run's config
CHANNELS = 64  # resnet8's last map


def _ie_cfg(teacher_dir, ae_epochs=30.0):
  """IE-FT resnet8 -> resnet8 on digits, the two stages of configs/ie_kd.py."""
  c = recipes.with_teacher(recipes.digits('resnet8'), 'resnet8', teacher_dir)
  c.progress_bar = False
  shared = dict(method='ie_kd', variant='ft', inherit_ratio=RATIO)
  recipes.with_terms(c, {}, 1.0)
  c.stages = (
      recipes.stage('ae', ae_epochs, trainable=('^aux/ie/ae/',), ce_weight=0.0,
                    optim=dict(lr=0.1, schedule='constant', boundaries_epochs=()),
                    terms={'ie': dict(shared, phase='ae')}),
      recipes.stage('main', trainable=('^student/', '^aux/ie/(inh|exp)/'), ce_weight=1.0,
                    terms={'ie': dict(shared, inherit_weight=50.0, explore_weight=50.0)}),
  )
  return c


def _write_run(workdir, cfg, perm=None):
  """config.json + one checkpoint (step 3): perturbed student weights, optionally another IE perm."""
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    f.write(config_lib.to_json(cfg))
  setup = setup_lib.build(cfg)
  v = setup_lib.init_variables(setup)
  rng = np.random.default_rng(5)  # numpy: no per-shape compiles
  v['params']['student'] = jax.tree.map(
      lambda a: np.asarray(a) + rng.normal(0, 0.1, a.shape).astype(np.float32), v['params']['student'])
  v['batch_stats'] = jax.tree.map(lambda a: np.asarray(a) + np.float32(0.05), v['batch_stats'])
  init_perm = None
  if perm is not None:
    init_perm = np.asarray(v['aux_state']['ie']['ie_split']['perm'])
    v['aux_state']['ie']['ie_split']['perm'] = jnp.asarray(perm, jnp.int32)
  tx, _ = optim.stage_tx(setup, 0, v['params'])
  state = {**v, 'step': jnp.asarray(3, jnp.int32), 'opt': tx.init(v['params'])}
  ck = ckpt_lib.Checkpointer(os.path.join(workdir, 'checkpoints'), asynchronous=False)
  ck.save(3, state)
  ck.close()
  return v, init_perm


def _np_linear_cka(x, y):
  """Kornblith et al. eq. 5 in float64: ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F), centred."""
  x = x.reshape(len(x), -1).astype(np.float64)
  y = y.reshape(len(y), -1).astype(np.float64)
  x, y = x - x.mean(0), y - y.mean(0)
  return np.sum((y.T @ x) ** 2) / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))


def _np_rbf_cka(x, y, frac=0.5):
  """RBF CKA in float64: sigma = frac * median off-diagonal distance, HSIC with H K H."""
  def gram(a):
    a = a.reshape(len(a), -1).astype(np.float64)
    d2 = np.maximum(((a[:, None, :] - a[None, :, :]) ** 2).sum(-1), 0)
    s2 = frac ** 2 * np.median(d2[np.triu_indices(len(a), 1)])
    return np.exp(-d2 / (2 * s2))
  n = len(x)
  h = np.eye(n) - 1.0 / n
  k, l = h @ gram(x) @ h, h @ gram(y) @ h
  return np.sum(k * l) / np.sqrt(np.sum(k * k) * np.sum(l * l))


def _last_map(variables, ds, x01):
  """Independent path to the student's last map: normalise on the host, apply a fresh resnet8."""
  model = models.create('resnet8', ds.num_classes)
  xn = (x01 - np.asarray(ds.mean, np.float32)) / np.asarray(ds.std, np.float32)
  _, feats = model.apply({'params': variables['params']['student'],
                          'batch_stats': variables['batch_stats']}, xn, train=False)
  return np.asarray(feats['last_map'], np.float64)


def _parse(argv):
  p = argparse.ArgumentParser()
  cli.add_arguments(p)
  return p.parse_args(argv)


@pytest.fixture(scope='module')
def ie_run(tmp_path_factory):
  root = tmp_path_factory.mktemp('ie')
  teacher = str(root / 'teacher')
  _write_run(teacher, recipes.digits('resnet8'))
  student = str(root / 'ie_ft')
  perm = np.random.RandomState(3).permutation(CHANNELS)
  v, init_perm = _write_run(student, _ie_cfg(teacher), perm)
  return student, v, perm, init_perm


def test_ie_split_is_the_checkpoints_and_cka_uses_exactly_its_channels(ie_run, tmp_path):
  d, v, perm, init_perm = ie_run
  n_inh = int(round(CHANNELS * RATIO))
  # The stored permutation is not the one the seed draws: re-deriving it would fail here.
  assert not np.array_equal(init_perm, perm)
  (net,), ds = runs.load(d)
  assert net.ie is not None and net.ie.feature == 'last_map'
  np.testing.assert_array_equal(net.ie.perm, perm)
  assert net.ie.n_inh == n_inh == 16
  # The CLI's halves are CKA between exactly those channels of the loaded net's last map.
  out = str(tmp_path / 'out')
  n = 40
  assert cli.run(_parse(['cka', d, '--out', out, '--cka_examples', str(n)])) == 0
  halves = json.load(open(os.path.join(out, 'cka.json')))['halves'][net.label]
  assert halves['split'].startswith('IE split')
  x, _ = runs.test_arrays(ds, n)
  f = _last_map(v, ds, x)
  inh, exp = f[..., perm[:n_inh]], f[..., perm[n_inh:]]
  assert inh.shape[-1] == 16 and exp.shape[-1] == 48
  want_lin, want_rbf = _np_linear_cka(inh, exp), _np_rbf_cka(inh, exp)
  np.testing.assert_allclose(halves['linear'], want_lin, rtol=1e-5)
  np.testing.assert_allclose(halves['rbf'], want_rbf, rtol=1e-5)
  # Another split of the same map (the init permutation, or the default ratio) gives a number
  # 100x the tolerance away, so the comparison above pins the channels.
  other = _np_linear_cka(f[..., init_perm[:n_inh]], f[..., init_perm[n_inh:]])
  half = _np_linear_cka(f[..., perm[:32]], f[..., perm[32:]])
  assert min(abs(other - want_lin), abs(half - want_lin)) > 100 * 1e-5 * want_lin


@pytest.mark.slow
def test_trained_ie_kd_run_split_and_halves(tmp_path):
  """A real IE-FT run (teacher 2 steps, IE-KD 1 'ae' step + 2 'main' steps): the analysis split
  is the checkpoint's `aux_state/ie/ie_split/perm` (read back with orbax, independently) and
  the config's ratio; the halves' CKA is a numpy CKA of those channels of the trained net."""
  from kdjax.train import loop
  teacher = str(tmp_path / 'teacher')
  tc = recipes.digits('resnet8')
  tc.progress_bar = False
  loop.train_and_evaluate(tc, teacher, stop_after_steps=2)
  d = str(tmp_path / 'ie_ft')
  cfg = _ie_cfg(teacher, ae_epochs=0.05)  # 1437 images / batch 64: one 'ae' step
  cfg.eval_every_epochs = cfg.checkpoint_every_epochs = 1
  loop.train_and_evaluate(cfg, d, stop_after_steps=3)
  ck = ckpt_lib.Checkpointer(os.path.join(d, 'checkpoints'), asynchronous=False)
  step = ck.manager.latest_step()
  raw = ck.manager.restore(step)  # the saved tree as stored, no template
  ck.close()
  assert step == 3
  perm = np.asarray(raw['aux_state']['ie']['ie_split']['perm'])
  assert sorted(perm.tolist()) == list(range(CHANNELS))
  (net,), ds = runs.load(d)
  np.testing.assert_array_equal(net.ie.perm, perm)
  assert net.ie.n_inh == 16
  out = str(tmp_path / 'out')
  assert cli.run(_parse(['cka', d, '--out', out, '--cka_examples', '60'])) == 0
  halves = json.load(open(os.path.join(out, 'cka.json')))['halves'][net.label]
  x, _ = runs.test_arrays(ds, 60)
  f = _last_map(raw, ds, x)
  np.testing.assert_allclose(halves['linear'], _np_linear_cka(f[..., perm[:16]], f[..., perm[16:]]),
                             rtol=1e-5)


# ---------------------------------------------------------------- DML cohorts

COHORT = ('resnet8', 'resnet14')  # different members: each Net must get its own architecture


def _dml_cfg():
  c = recipes.digits('resnet8')
  c.progress_bar = False
  c.model.cohort = COHORT
  return recipes.with_terms(c, {'dml': dict(method='dml', weight=1.0, temperature=1.0,
                                            tau_squared=False, reduction='mean')}, 0.0)


def _trainer_logits(workdir):
  """{'member<i>/logits': ...} on the test split from the trainer's own eval function
  (`step.make_eval_fn` on the restored state, host-normalised images as the Evaluator)."""
  from kdjax.train import export
  _, setup, _, state = export.restore_workdir(workdir)
  fn = jax.jit(step_lib.make_eval_fn(setup.student, setup.survival))
  ds = setup.dataset
  out = fn(state['params']['student'], state['batch_stats'], inputs.normalize_host(ds.test_images, ds))
  return {k: np.asarray(v) for k, v in out.items()}


def _check_members(workdir):
  nets, ds = runs.load(workdir)
  name = os.path.basename(workdir)
  assert [n.label for n in nets] == [f'{name}/member0', f'{name}/member1']
  assert [n.arch for n in nets] == list(COHORT)
  assert [n.num_blocks for n in nets] == [3, 6] and all(n.ie is None for n in nets)
  want = _trainer_logits(workdir)
  x, y = runs.test_arrays(ds)
  got = [np.asarray(n(x)[0]) for n in nets]
  for i, g in enumerate(got):
    np.testing.assert_allclose(g, want[f'member{i}/logits'], rtol=1e-5, atol=1e-5)
  assert np.abs(got[0] - got[1]).max() > 1e-2  # two networks, not one loaded twice
  return got, y


def test_dml_cohort_members_are_the_trainers_networks(tmp_path):
  d = str(tmp_path / 'dml')
  _write_run(d, _dml_cfg())
  _check_members(d)


@pytest.mark.slow
def test_trained_dml_cohort_members_logits_and_top1(tmp_path):
  """A real DML run (resnet8 + resnet14, digits, 1 epoch): each loaded member's logits are the
  trainer's eval function's '<member>/logits', and its top-1 the run's final member top-1."""
  from kdjax.train import loop
  cfg = _dml_cfg()
  cfg.epochs, cfg.eval_every_epochs, cfg.checkpoint_every_epochs = 1, 1, 1
  cfg.optim.batch_size = 128
  d = str(tmp_path / 'dml')
  loop.train_and_evaluate(cfg, d)
  final = json.load(open(os.path.join(d, 'results.json')))['final']
  got, y = _check_members(d)
  for i, g in enumerate(got):
    assert (g.argmax(-1) == y).mean() == pytest.approx(final[f'member{i}/top1'], abs=1e-9)
