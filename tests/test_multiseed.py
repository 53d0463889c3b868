"""Seeds in parallel (kdjax/train/multiseed.py): seed k of a vmapped group is the run with that seed.

Digits, resnet8 -> resnet8, batch 256 (5 steps per epoch), 2 epochs: 10 steps, two evaluations
and checkpoints. The teacher is a randomly initialised resnet8 saved as a workdir (distillation
needs logits and features, not a good teacher), so no teacher training is compiled.
"""

import dataclasses
import json
import os
import time

import jax
import numpy as np
import pytest

from kdjax import config as config_lib
from kdjax import report
from kdjax.config import import_module
from kdjax.train import checkpoint as ckpt_lib
from kdjax.train import loop, multiseed, setup as setup_lib

recipes = import_module('common')

# Seed k of the group and the separate run round differently (vmapped reductions and convolutions
# are other XLA programs): on step 1 every gradient agrees to 2.5e-7 (relative L2, measured). Ten
# steps later parameters, BN statistics, CRD banks and losses still agree to < 1e-6, but the
# newest gradient (momentum trace, `grad_norm`) differs by up to 2e-3 (relative L2): a BN network
# near chance level has gradients of nearly cancelling sums, which amplify 1e-7 parameter
# differences (two separate runs perturbed by 1e-7 differ alike). Hence the two tolerances.
RTOL, ATOL = 1e-5, 1e-6
GRAD_RTOL = 5e-3
TERMS = {'kd': recipes.kd_terms(),
         'crd': {'crd': dict(method='crd', weight=0.8, nce_k=64, feat_dim=16),
                 'kd': dict(method='kd', weight=1.0)}}


@pytest.fixture(scope='module')
def teacher_dir(tmp_path_factory):
  d = str(tmp_path_factory.mktemp('teacher'))
  cfg = recipes.digits('resnet8')
  setup = setup_lib.build(cfg)
  v = setup_lib.init_variables(setup)
  with open(os.path.join(d, 'config.json'), 'w') as f:
    f.write(config_lib.to_json(cfg))
  ck = ckpt_lib.Checkpointer(os.path.join(d, 'checkpoints'), asynchronous=False)
  ck.save(0, {'params': {'student': v['params']['student']}, 'batch_stats': v['batch_stats']})
  ck.close()
  return d


def make_cfg(teacher_dir, method='kd', **over):
  ce = 0.1 if method == 'kd' else 1.0
  cfg = recipes.student('digits', 'resnet8', 'resnet8', TERMS[method], ce_weight=ce)
  cfg.teacher.checkpoint = teacher_dir
  cfg.epochs = 2
  cfg.optim.batch_size = 256
  cfg.optim.warmup_epochs = 0.0
  cfg.eval_every_epochs = cfg.checkpoint_every_epochs = 1
  cfg.log_every_steps = 3
  cfg.progress_bar = False
  for k, v in over.items():
    node = cfg
    *path, leaf = k.split('.')
    for p in path:
      node = node[p]
    node[leaf] = v
  return cfg


def final_state(workdir, cfg):
  s = setup_lib.build(cfg)
  ck = ckpt_lib.Checkpointer(os.path.join(workdir, 'checkpoints'))
  if multiseed.is_group(cfg):
    out = multiseed.restore(s, ck, multiseed.init_group(s, multiseed.seed_list(cfg)))
  else:
    out = loop.restore(s, ck, setup_lib.init_variables(s))
  ck.close()
  return out


def records(workdir):
  """metrics.jsonl without the wall-clock field."""
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [{k: v for k, v in json.loads(l).items() if k != 'time'} for l in f]


def assert_records_close(a, b):
  assert [(r['step'], r['kind'], sorted(r)) for r in a] == [(r['step'], r['kind'], sorted(r)) for r in b]
  for x, y in zip(a, b):
    for k in sorted(x):
      if k != 'kind':
        np.testing.assert_allclose(x[k], y[k], rtol=GRAD_RTOL if k == 'grad_norm' else RTOL,
                                   atol=ATOL, err_msg=f'step {x["step"]} {x["kind"]} {k}')


def assert_states_close(a, b, rtol=RTOL, atol=ATOL):
  def close(path, x, y):
    x, y = np.asarray(x), np.asarray(y)
    if jax.tree_util.keystr(path).startswith("['opt']"):  # the newest gradients: see GRAD_RTOL
      rel = np.linalg.norm(x - y) / max(np.linalg.norm(y), 1e-30)
      assert rel < GRAD_RTOL, (jax.tree_util.keystr(path), rel)
    else:
      np.testing.assert_allclose(x, y, rtol=rtol, atol=atol, err_msg=jax.tree_util.keystr(path))
  jax.tree_util.tree_map_with_path(close, a, b)


@pytest.fixture(scope='module')
def kd_group(teacher_dir, tmp_path_factory):
  d = str(tmp_path_factory.mktemp('kd_group'))
  cfg = make_cfg(teacher_dir, 'kd', seed=3, num_seeds=2)
  return cfg, d, loop.train_and_evaluate(cfg, d)


@pytest.mark.slow
@pytest.mark.parametrize('method', ['kd', 'crd'])
def test_group_seed_equals_separate_run(method, teacher_dir, kd_group, tmp_path):
  """Seed index 1 of a 2-seed group: params, optimizer, CRD banks, metrics.jsonl and results.json
  of the separate run with that seed, to float32 rounding (RTOL 1e-5)."""
  if method == 'kd':
    cfg, group_dir, out = kd_group            # seeds 3 and 4 from seed=3, num_seeds=2
    seed, short = 4, {}
  else:
    # CRD over 2 steps (batch 480: 2 steps per epoch, one epoch): over more steps its
    # temperature-0.07 contrast amplifies rounding faster than KD does (measured: relative L2
    # 1e-6 after 3 steps of batch 256, 3e-3 after 5), so a longer run needs a loose tolerance.
    short = {'optim.batch_size': 480, 'epochs': 1}
    cfg = make_cfg(teacher_dir, 'crd', seeds=(5, 2), **short)  # an explicit seed list
    group_dir = str(tmp_path / 'group')
    out = loop.train_and_evaluate(cfg, group_dir)
    seed = 2
  assert out['seeds'] == multiseed.seed_list(cfg) and out['seeds'][1] == seed
  seed_dir = os.path.join(group_dir, 'seed1')
  single_cfg = make_cfg(teacher_dir, method, seed=seed, **short)
  single = loop.train_and_evaluate(single_cfg, str(tmp_path / 'single'))

  # The seed's directory is a separate run's: same config (so the same hash), results, metrics.
  assert json.load(open(os.path.join(seed_dir, 'config.json'))) == json.loads(
      config_lib.to_json(single_cfg))
  res = json.load(open(os.path.join(seed_dir, 'results.json')))
  assert res == out['runs'][1]
  for key in ('seed', 'config_hash', 'methods', 'model', 'teacher', 'teacher_checkpoint_hash'):
    assert res[key] == single[key], key
  assert sorted(res['final']) == sorted(single['final'])
  np.testing.assert_allclose([res['final'][k] for k in sorted(res['final'])],
                             [single['final'][k] for k in sorted(res['final'])], rtol=RTOL, atol=ATOL)
  assert res['best']['epoch'] == single['best']['epoch']
  assert_records_close(records(seed_dir), records(str(tmp_path / 'single')))

  # Final states: the seed's own checkpoint and its slice of the stacked one.
  step, a = final_state(str(tmp_path / 'single'), single_cfg)
  step_s, b = final_state(seed_dir, single_cfg)
  step_g, g = final_state(group_dir, cfg)
  assert step == step_s == step_g == (10 if method == 'kd' else 2)
  jax.tree.map(np.testing.assert_array_equal, b, multiseed.unstack(g, 1))
  # CRD: test_sharding.py's CRD tolerance (its normaliser Z ~1e5 and temperature 0.07 amplify
  # rounding; measured 1.5e-6 absolute on BN biases of ~5e-3 after 2 steps).
  assert_states_close(a, b, *((RTOL, ATOL) if method == 'kd' else (1e-4, 1e-5)))
  if method == 'crd':  # the memory banks moved away from their init, in both runs alike
    mem = a['aux_state']['crd']['memory']
    assert float(mem['z'][0]) > 0
  # The two seeds really differ (own init, data order, augmentation).
  other = multiseed.unstack(g, 0)['params']['student']
  assert not np.allclose(jax.tree.leaves(other)[0], jax.tree.leaves(b['params']['student'])[0])


@pytest.mark.slow
def test_interrupted_group_resumes_exactly(teacher_dir, kd_group, tmp_path):
  """Stop a 2-seed group mid-epoch (step 3 of 5), restart: bit-identical to the uninterrupted group."""
  cfg, full_dir, full = kd_group
  part_dir = str(tmp_path / 'part')
  assert loop.train_and_evaluate(cfg, part_dir, stop_after_steps=3) == {'interrupted': True, 'step': 3}
  resumed = loop.train_and_evaluate(cfg, part_dir)
  for k in range(2):
    assert resumed['runs'][k]['final'] == full['runs'][k]['final']
    assert records(os.path.join(part_dir, f'seed{k}')) == records(os.path.join(full_dir, f'seed{k}'))
  (_, a), (_, b) = final_state(full_dir, cfg), final_state(part_dir, cfg)
  jax.tree.map(np.testing.assert_array_equal, a, b)


def test_report_reads_a_group_as_its_seeds(kd_group):
  _, group_dir, out = kd_group
  runs = report.load([group_dir])
  assert [r.workdir for r in runs] == out['workdirs']
  t = report.table(runs)
  (cell,) = t['cells'].values()
  assert cell['n'] == 2 and cell['seeds'] == [3, 4]
  assert cell['values'] == [100 * r['final']['top1'] for r in out['runs']]


def test_seed_directory_is_a_workdir_and_the_group_root_is_refused(kd_group):
  _, group_dir, out = kd_group
  res = loop.evaluate_workdir(os.path.join(group_dir, 'seed0'))
  assert res['step'] == 10 and res['top1'] == out['runs'][0]['final']['top1']
  with pytest.raises(ValueError, match='holds 2 seeds trained together.*seed0 ... seed1'):
    loop.evaluate_workdir(group_dir)


@pytest.mark.parametrize('over,match', [
    (dict(num_seeds=0), r'num_seeds=0: give a positive integer'),
    (dict(num_seeds=-2), r'num_seeds=-2: give a positive integer'),
    (dict(num_seeds=3, seeds=(1, 2)), r'num_seeds=3 but seeds=\[1, 2\] lists 2'),
    (dict(seeds=(1, 1)), r'repeats a seed'),
    (dict(seeds=(1, -1)), r'integers in \[0, 2\*\*31 - 1\].*\[-1\]'),
])
def test_bad_seed_settings_fail_before_anything_is_built(over, match, tmp_path):
  cfg = make_cfg(str(tmp_path / 'no_teacher_here'), **over)  # the teacher is never read
  t0 = time.time()
  with pytest.raises(ValueError, match=match):
    loop.train_and_evaluate(cfg, str(tmp_path / 'run'))
  assert time.time() - t0 < 5 and not os.path.exists(tmp_path / 'run')


def test_unsupported_combinations_fail_before_compiling(teacher_dir, kd_group, tmp_path):
  cfg = make_cfg(teacher_dir, num_seeds=2)
  s = setup_lib.build(cfg)
  streamed = dataclasses.replace(s, dataset=type("Streamed", (), {"in_memory": False})())
  with pytest.raises(ValueError, match="needs an in-memory dataset.*'digits' is streamed"):
    multiseed._check_supported(cfg, streamed)
  # A workdir holding another group's stacked checkpoints is refused (it owns its config).
  group_cfg, group_dir, _ = kd_group
  other = make_cfg(teacher_dir, seed=3, num_seeds=3)
  t0 = time.time()
  with pytest.raises(ValueError, match=r'holds a run with another config \(num_seeds: 2 -> 3\)'):
    loop.train_and_evaluate(other, group_dir)
  assert time.time() - t0 < 20
  assert multiseed.seed_list(config_lib.from_json(os.path.join(group_dir, 'config.json'))) == [3, 4]


@pytest.mark.slow
def test_non_finite_loss_names_the_seed(teacher_dir, tmp_path):
  cfg = make_cfg(teacher_dir, seed=3, num_seeds=2, epochs=1, **{'optim.lr': 1e30})
  with pytest.raises(loop.NonFiniteLossError,
                     match=r'seed 3 \(.*seed0\): non-finite loss at step \d+: .*loss/kd'):
    loop.train_and_evaluate(cfg, str(tmp_path))


def test_single_runs_are_not_groups():
  cfg = recipes.digits('resnet8')
  assert cfg.num_seeds == 1 and cfg.seeds == () and not multiseed.is_group(cfg)
  assert multiseed.seed_list(cfg) == [0]
  c = multiseed.seed_config(make_cfg('', seeds=(7, 9)), 9)
  assert (c.seed, c.num_seeds, c.seeds) == (9, 1, ()) and not multiseed.is_group(c)


TWO_DEVICES = '''
import sys, tempfile
import jax, numpy as np
sys.path.insert(0, sys.argv[1])
import test_multiseed as T
from kdjax.train import loop, setup as setup_lib
assert jax.device_count() == 2, jax.devices()

class Factory:
  def mktemp(self, name):
    return tempfile.mkdtemp(prefix=name)

cfg = T.make_cfg(T.teacher_dir.__wrapped__(Factory()), 'kd', seeds=(5, 2), epochs=1)
states = []
for n_dev in (2, 1):
  orig = setup_lib.make_mesh
  setup_lib.make_mesh = lambda: orig(jax.devices()[:n_dev])
  d = tempfile.mkdtemp()
  loop.train_and_evaluate(cfg, d)
  states.append(T.final_state(d, cfg)[1])
  setup_lib.make_mesh = orig
keys = ('params', 'batch_stats', 'aux_state')
def close(path, x, y):  # as test_sharding.py: cross-device sums round differently
  np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5, err_msg=jax.tree_util.keystr(path))
jax.tree_util.tree_map_with_path(close, *[{k: s[k] for k in keys} for s in states])
print('OK')
'''


@pytest.mark.slow
def test_group_on_two_devices_matches_one():
  """Seeds vmapped and each seed's batch sharded over 2 virtual devices: the 1-device result."""
  import subprocess
  import sys
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=2', JAX_PLATFORMS='cpu')
  out = subprocess.run([sys.executable, '-c', TWO_DEVICES, os.path.dirname(__file__)], env=env,
                       capture_output=True, text=True, timeout=900)
  assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
  assert 'OK' in out.stdout
