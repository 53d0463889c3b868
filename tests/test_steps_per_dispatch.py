"""`steps_per_dispatch`: k train steps in one lax.scan are bit-identical to k
single steps (state and per-step metrics), and the non-finite guard still names
the first bad step."""

import os

import jax
import numpy as np
import pytest

from kdjax.config import import_module
recipes = import_module("common")  # configs/common.py: the shared recipes
from kdjax.train import checkpoint as ckpt_lib
from kdjax.train import inputs, loop, optim, setup as setup_lib


def _cfg(**over):
  cfg = recipes.digits('resnet8')
  cfg.epochs = 1
  cfg.progress_bar = False
  # Stochastic depth draws per-step keys: a wrong step counter would show.
  with cfg.distill.unlocked():
    cfg.distill.terms = {'sd': dict(method='stochastic_depth', final_survival_prob=0.5)}
  for k, v in over.items():
    setattr(cfg, k, v)
  return cfg


def _compiled(cfg, k):
  s = setup_lib.build(cfg)
  variables = setup_lib.init_variables(s)
  tx, _ = optim.stage_tx(s, 0, variables['params'])
  batch_fn = inputs.in_memory_batch_fn(s.dataset, cfg.data, seed=cfg.seed, batch_size=cfg.optim.batch_size,
                                       steps_per_epoch=s.steps_per_epoch)
  repl = setup_lib.replicated(s.mesh)
  data = jax.device_put({'image': s.dataset.train_images,
                         'label': s.dataset.train_labels.astype(np.int32)}, repl)
  return (s, variables, loop.compile_stage(s, 0, tx, batch_fn),
          loop.compile_stage(s, 0, tx, batch_fn, steps=k), data)


def _equal(a, b):
  jax.tree_util.tree_map_with_path(
      lambda p, x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y),
                                                    err_msg=jax.tree_util.keystr(p)), a, b)


@pytest.mark.slow
def test_scanned_steps_are_bit_identical_to_single_steps():
  cfg = _cfg()
  s, variables, plain, multi, data = _compiled(cfg, 3)
  state = loop.fresh_state(s, variables)
  copies = [jax.tree.map(lambda x: x.copy(), state) for _ in range(2)]
  singles, plain_m = [], []
  one_by_one = copies[0]
  for _ in range(3):  # the loop program, one step per dispatch
    one_by_one, m = multi(one_by_one, {}, data, np.int32(1))
    singles.append(jax.tree.map(lambda v: v[0], jax.device_get(m)))
  for _ in range(3):  # the plain jitted step
    state, m = plain(state, {}, data)
    plain_m.append(jax.device_get(m))
  scanned, mb = multi(copies[1], {}, data, np.int32(3))
  mb = jax.device_get(mb)
  assert int(scanned['step']) == int(one_by_one['step']) == 3
  _equal(jax.device_get(one_by_one), jax.device_get(scanned))
  for i, m in enumerate(singles):
    _equal(m, {k: v[i] for k, v in mb.items()})
  # The plain step is compiled outside a loop (other fusions): equal to float32 rounding.
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5),
               jax.device_get(state), jax.device_get(scanned))
  for i, m in enumerate(plain_m):
    np.testing.assert_allclose(m['loss/total'], mb['loss/total'][i], rtol=1e-5)
  # Host side: a dispatch of n steps unstacks into one (step, metrics) per step.
  host = loop._check_finite([(0, mb, 3)], [])
  assert [st for st, _ in host] == [0, 1, 2]
  _equal(host[2][1], singles[2])


def test_scanned_dispatch_reports_the_first_non_finite_step():
  cfg = _cfg()
  s, variables, _, multi, data = _compiled(cfg, 3)
  state = loop.fresh_state(s, variables)
  state, _ = multi(state, {}, data, np.int32(1))  # step 0 is fine
  # A NaN weight from step 1 on: every later loss is NaN and the state is kept.
  bad = jax.tree.map(lambda x: x, state)
  leaf = bad['params']['student']['head']['kernel']
  bad['params']['student']['head']['kernel'] = leaf.at[0, 0].set(np.nan)
  before = jax.device_get(bad['params'])
  out, m = multi(bad, {}, data, np.int32(3))
  assert int(out['step']) == 4  # the counter advances; nothing else does
  _equal(jax.device_get(out['params']), before)
  with pytest.raises(loop.NonFiniteLossError, match=r'non-finite loss at step 1: '):
    loop._check_finite([(0, {'loss/total': np.float32(1.0)}), (1, m, 3)], [])


def test_steps_per_dispatch_must_suit_the_data():
  cfg = _cfg(steps_per_dispatch=0)
  ds = setup_lib.build(_cfg()).dataset
  with pytest.raises(ValueError, match='integer >= 1'):
    loop.steps_per_dispatch(cfg, ds)
  streamed = type(ds)(**{**ds.__dict__, 'in_memory': False})
  with pytest.raises(ValueError, match='needs an in-memory dataset'):
    loop.steps_per_dispatch(_cfg(steps_per_dispatch=4), streamed)


@pytest.mark.slow
def test_loop_with_scan_matches_loop_without(tmp_path):
  """Through the real loop (epoch end at step 22, not a multiple of 4; stop and resume)."""
  states, records = [], []
  for k in (2, 4):  # k = 1 runs the plain step (equal to rounding, see test above)
    cfg = _cfg(steps_per_dispatch=k, log_every_steps=4)
    wd = str(tmp_path / f'k{k}')
    assert loop.train_and_evaluate(cfg, wd, stop_after_steps=9)['step'] == 9
    loop.train_and_evaluate(cfg, wd)
    s = setup_lib.build(cfg)
    ck = ckpt_lib.Checkpointer(os.path.join(wd, 'checkpoints'))
    step, state = loop.restore(s, ck, setup_lib.init_variables(s))
    ck.close()
    assert step == s.steps_per_epoch == 22
    states.append(jax.device_get({k: state[k] for k in ('params', 'batch_stats', 'opt')}))
    import json
    with open(os.path.join(wd, 'metrics.jsonl')) as f:
      records.append([{k: v for k, v in json.loads(l).items() if k != 'time'} for l in f])
  _equal(states[0], states[1])
  assert records[0] == records[1]
