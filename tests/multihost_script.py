"""One side of test_multihost: `python multihost_script.py OUT TEACHER RUNS`.

Run as one process (4 devices) or by launch/local_multiprocess.py (2 x 2).
Trains (if absent) a digits teacher, then for each run in RUNS (kd, crd,
kd_stream): 1 step -> checkpoint -> resume -> step 3 -> checkpoint -> resume
-> end of epoch 1 with evaluation. Process 0 writes OUT/<run>_step1.npz (the
parameter update and auxiliary state after one step), OUT/<run>.npz (params and
auxiliary state of the final checkpoint) and OUT/<run>.json (metrics records,
results).
"""

import builtins
import json
import os
import sys

from kdjax import runtime

runtime.initialize()

import jax  # noqa: E402
import numpy as np  # noqa: E402

from kdjax import data as data_lib  # noqa: E402
from kdjax.config import import_module  # noqa: E402
recipes = import_module('common')  # configs/common.py: the shared recipes
from kdjax.train import checkpoint as ck, loop, setup as setup_lib  # noqa: E402

out, teacher, runs = sys.argv[1], sys.argv[2], sys.argv[3].split(',')
rank, nproc = jax.process_index(), jax.process_count()
print(f'process {rank} of {nproc}, {jax.device_count()} devices, {jax.local_device_count()} local',
      flush=True)
assert jax.device_count() == 4


def streamed(ds):
  """digits as a per-host stream laid out like the grain streams (host h: records h, h + P, ...)."""
  n, h, p = ds.num_train, jax.process_index(), jax.process_count()

  def train_stream(seed, start_step, global_batch):
    per = global_batch // p
    step = start_step
    while True:
      epoch, i = divmod(step * global_batch, n - n % global_batch)
      order = np.random.default_rng([seed, epoch]).permutation(n)
      idx = order[i + h:i + global_batch:p][:per]
      yield {'image': ds.train_images[idx], 'label': ds.train_labels[idx].astype(np.int32),
             'index': idx.astype(np.int32)}
      step += 1

  def test_stream(global_batch):
    per, m = global_batch // p, len(ds.test_labels)
    host_idx = np.arange(h, m, p)
    for s in range(0, -(-(-(-m // p)) // per) * per, per):
      j = host_idx[s:s + per]
      mask = np.zeros(per, bool)
      mask[:len(j)] = True
      img = np.zeros((per,) + ds.test_images.shape[1:], np.uint8)
      lab = np.zeros(per, np.int32)
      img[:len(j)], lab[:len(j)] = ds.test_images[j], ds.test_labels[j]
      yield {'image': img, 'label': lab, 'index': np.zeros(per, np.int32), 'mask': mask}

  return data_lib.Dataset(**{**ds.__dict__, 'train_images': None, 'test_images': None,
                             'test_labels': None, 'train_labels': None, 'clean_train_labels': None,
                             'train_stream': train_stream, 'test_stream': test_stream,
                             'in_memory': False})


def guard_writes(root):
  """Processes other than 0 may write only checkpoints under `root` (the workdirs' parent)."""
  root = os.path.abspath(root)
  real_open, real_replace = builtins.open, os.replace

  def check(path):
    path = os.path.abspath(os.fspath(path))
    if path.startswith(root + os.sep) and 'checkpoints' not in os.path.relpath(path, root).split(os.sep):
      raise AssertionError(f'process {rank} wrote {path}')

  def guarded_open(file, mode='r', *a, **kw):
    if isinstance(file, (str, os.PathLike)) and any(c in mode for c in 'wax+'):
      check(file)
    return real_open(file, mode, *a, **kw)

  def guarded_replace(src, dst, *a, **kw):
    check(dst)
    return real_replace(src, dst, *a, **kw)
  builtins.open, os.replace = guarded_open, guarded_replace


def config(run):
  if run == 'crd':
    cfg = recipes.student('digits', 'resnet8', 'resnet8', {
        'crd': dict(method='crd', weight=0.8, nce_k=256), 'kd': dict(method='kd', weight=1.0)})
  else:
    cfg = recipes.student('digits', 'resnet8', 'resnet8', {'kd': dict(method='kd', weight=0.9)})
  cfg.teacher.checkpoint = teacher
  cfg.epochs = 1
  cfg.progress_bar = False
  cfg.optim.warmup_epochs = 0.0
  cfg.log_every_steps = 5
  cfg.eval_every_epochs = 1
  return cfg


if not os.path.exists(os.path.join(teacher, 'checkpoints')):
  assert nproc == 1, 'the single-process run trains the teacher'
  t = recipes.digits('resnet8')
  t.epochs, t.progress_bar = 1, False
  loop.train_and_evaluate(t, teacher, stop_after_steps=4)

def restored(cfg, workdir):
  s = setup_lib.build(cfg)
  c = ck.Checkpointer(os.path.join(workdir, 'checkpoints'))
  step, state = loop.restore(s, c, setup_lib.init_variables(s))
  c.close()
  return s, int(step), state


def save(name, tree):
  if rank == 0:
    flat = jax.tree_util.tree_flatten_with_path(jax.device_get(tree))[0]
    np.savez(os.path.join(out, f'{name}.npz'), **{jax.tree_util.keystr(p): np.asarray(v) for p, v in flat})


real_build = setup_lib.build
if rank != 0:
  guard_writes(out)
for run in runs:
  workdir = os.path.join(out, run)
  cfg = config(run)
  if run.endswith('_stream'):
    setup_lib.build = lambda c, **kw: real_build(
        c, **{**kw, 'dataset': streamed(data_lib.load(c.data))})
  # After one step (before momentum and ReLU kinks amplify rounding): the parameter updates.
  assert loop.train_and_evaluate(cfg, workdir, stop_after_steps=1) == {'interrupted': True, 'step': 1}
  s, step, state = restored(cfg, workdir)
  assert step == 1
  init = setup_lib.init_variables(s)['params']
  save(f'{run}_step1', {'update': jax.tree.map(lambda a, b: a - b, state['params'], init),
                        'aux_state': state['aux_state']})
  stopped = loop.train_and_evaluate(cfg, workdir, stop_after_steps=3)
  assert stopped == {'interrupted': True, 'step': 3}, stopped
  results = loop.train_and_evaluate(cfg, workdir)
  s, step, state = restored(cfg, workdir)
  setup_lib.build = real_build
  save(run, {k: state[k] for k in ('params', 'aux_state', 'batch_stats')})
  if rank == 0:
    with open(os.path.join(workdir, 'metrics.jsonl')) as f:
      records = [json.loads(line) for line in f if line.strip()]
    with open(os.path.join(out, f'{run}.json'), 'w') as f:
      json.dump({'process_count': nproc, 'step': step, 'stopped_at': 3,
                 'steps_per_epoch': s.steps_per_epoch, 'records': records,
                 'results': results}, f)
  print(f'{run} done', flush=True)
