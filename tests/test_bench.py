"""kdjax.bench: the prepared step is the program training runs, seed groups included."""

import jax
import numpy as np

from kdjax import bench
from kdjax.config import import_module

recipes = import_module('common')


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
