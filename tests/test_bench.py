"""kdjax.bench: the prepared step is the program training runs, seed groups included."""

import importlib.util
import os

import jax
import numpy as np
import pytest

from kdjax import bench
from kdjax.config import import_module

recipes = import_module('common')
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load_script(path):
  spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], os.path.join(ROOT, path))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.mark.slow
def test_prepared_step_of_a_seed_group_trains_every_seed():
  # A config with num_seeds=2 must time the vmapped group step (two batches per step), not
  # one seed's step counted twice.
  cfg = recipes.digits('resnet8')
  cfg.optim.batch_size = 16
  cfg.num_seeds = 2
  prep = bench.PreparedStep(cfg)   # compiles and runs one step
  assert prep.num_seeds == 2 and prep.steps_per_call == 1
  state = jax.device_get(prep.state)
  np.testing.assert_array_equal(state['step'], [1, 1])
  kernels = [x for p, x in jax.tree_util.tree_flatten_with_path(state['params'])[0]
             if 'kernel' in jax.tree_util.keystr(p)]
  assert kernels and all(k.shape[0] == 2 for k in kernels)
  assert not np.allclose(kernels[0][0], kernels[0][1])   # seeds 0 and 1: their own init
  m = jax.device_get(prep())
  assert np.shape(m['loss/total']) == (1, 2) and np.all(np.isfinite(m['loss/total']))


def test_benchmark_variants_set_the_keys_kdjax_reads():
  # benchmarks/cpu_vs_torch.py (and accelerator.sh through it) once set `model.dtype`, which
  # kdjax never reads, and reported bf16 as unavailable. Each variant must change the step.
  import jax.numpy as jnp
  from kdjax import config as config_lib
  from kdjax.train import loop, multiseed, setup as setup_lib
  cpu_vs_torch = _load_script('benchmarks/cpu_vs_torch.py')
  cfg = cpu_vs_torch.contestant_config(64, steps_per_dispatch=8, dtype='bfloat16', seeds=5)
  config_lib.check(cfg)
  assert setup_lib.compute_dtype(cfg) == {'dtype': jnp.bfloat16}
  assert multiseed.seed_list(cfg) == [cfg.seed + k for k in range(5)]
  assert loop.steps_per_dispatch(cfg, bench.synthetic_dataset(cfg, pool=8)) == 8
  plain = cpu_vs_torch.contestant_config(64)
  assert (plain.optim.batch_size, plain.teacher.arch, plain.model.name) == (64, 'resnet32x4', 'resnet8x4')
  assert setup_lib.compute_dtype(plain) == {} and not multiseed.is_group(plain)


@pytest.mark.slow
def test_epochs_mode_runs_the_driver_and_projects_the_whole_run(capsys):
  # --epochs runs the real loop (evaluation and checkpoint every epoch here) on synthetic
  # data of the full digits size, in a temporary workdir it removes.
  cfg = recipes.digits('resnet8')
  cfg.eval_every_epochs = cfg.checkpoint_every_epochs = 1
  cfg.progress_bar = False
  before = set(os.listdir(bench.tempfile.gettempdir()))
  res = bench.time_epochs(cfg, 3)
  assert (res['epochs'], res['steps_per_epoch'], res['seeds']) == (3, 1437 // 64, 1)
  assert res['config_epochs'] == cfg.epochs
  assert res['first_epoch_s'] > res['steady_epoch_s'] > 0   # the first one compiles
  assert res['projected_run_s'] == pytest.approx(
      res['first_epoch_s'] + (cfg.epochs - 1) * res['steady_epoch_s'])
  # Training at the driver's rate fills part of a steady epoch; evaluation and the checkpoint
  # the rest (a checkpoint every epoch records the clock after the first).
  train_s = res['steps_per_epoch'] * 64 / res['train_images_per_sec']
  assert res['overhead_per_epoch_s'] == pytest.approx(res['steady_epoch_s'] - train_s)
  assert 0 < train_s < res['steady_epoch_s']
  out = capsys.readouterr().out
  assert [line.split()[1] for line in out.splitlines() if line.startswith('epoch ')] == [
      '1/15', '2/15', '3/15']                       # the driver's evaluation lines, kept
  assert 'Stopped at step' not in out               # its resume hint is not for a benchmark
  left = {d for d in set(os.listdir(bench.tempfile.gettempdir())) - before
          if d.startswith('kdjax-bench-')}
  assert not left


def test_epochs_mode_refuses_what_it_cannot_time():
  cfg = recipes.digits('resnet8')
  with pytest.raises(ValueError, match='at least 2 epochs'):
    bench.time_epochs(cfg, 1)
  cfg.epochs = 2
  with pytest.raises(ValueError, match='more than the config trains'):
    bench.time_epochs(cfg, 3)
  cfg.data.name = 'imagenet2012'
  with pytest.raises(ValueError, match='streamed from disk'):
    bench.time_epochs(cfg, 3)


def test_epochs_and_per_term_exclude_each_other(capsys):
  from kdjax import main
  assert main.run(['bench', '--config', 'configs/digits.py:arch=resnet8', '--epochs', '3',
                   '--per_term']) == 2
  assert 'does not combine with --epochs' in capsys.readouterr().err
