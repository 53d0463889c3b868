"""Workdirs that never lose data: ownership, lock, checkpoint repair, failed saves, TensorBoard.

Unit-level (no training): each test reproduces one fault from the reliability
trials on the component that handles it.
"""

import errno
import json
import os
import struct
import subprocess
import sys

import numpy as np
import orbax.checkpoint as ocp
import pytest

from kdjax.train import checkpoint as ckpt_lib
from kdjax.train import metrics as metrics_lib
from kdjax.train import workdir as workdir_lib

CFG = {'seed': 0, 'epochs': 15, 'progress_bar': True, 'log_every_steps': 20,
       'model': {'name': 'resnet8', 'kwargs': {}},
       'optim': {'lr': 0.05, 'boundaries_epochs': [150, 180]}}


def _json(**changes):
  cfg = json.loads(json.dumps(CFG))
  for key, value in changes.items():
    node = cfg
    *path, leaf = key.split('.')
    for p in path:
      node = node[p]
    node[leaf] = value
  return json.dumps(cfg)


def _snapshot(d):
  return {os.path.relpath(os.path.join(r, f), d): open(os.path.join(r, f), 'rb').read()
          for r, _, files in os.walk(d) for f in files if f != workdir_lib.LOCK_NAME}


# ---- 1. another config in an existing workdir ----

def _old_run(wd):
  os.makedirs(os.path.join(wd, 'checkpoints', '22'))
  open(os.path.join(wd, 'config.json'), 'w').write(_json())
  open(os.path.join(wd, 'metrics.jsonl'), 'w').write('{"step": 22}\n')
  open(os.path.join(wd, 'checkpoints', '22', 'x'), 'w').write('weights')


def test_other_config_stops_before_writing_and_names_the_keys(tmp_path):
  wd = str(tmp_path / 'run')
  _old_run(wd)
  before = _snapshot(wd)
  with pytest.raises(workdir_lib.WorkdirError) as e:
    workdir_lib.claim(wd, _json(**{'model.name': 'resnet20', 'optim.lr': 0.1}))
  msg = str(e.value)
  assert "model.name: 'resnet8' -> 'resnet20'" in msg and 'optim.lr: 0.05 -> 0.1' in msg
  assert 'seed' not in msg and '--force_new' in msg and '--allow_config_change' in msg
  assert _snapshot(wd) == before


def test_watching_keys_do_not_change_the_run(tmp_path):
  wd = str(tmp_path / 'run')
  _old_run(wd)
  before = _snapshot(wd)
  assert workdir_lib.claim(wd, _json(progress_bar=False, log_every_steps=5)) == 'same'
  assert _snapshot(wd) == before
  # Tuples and lists are the same JSON value; a changed list element is a change.
  assert workdir_lib.diff(_json(), _json(**{'optim.boundaries_epochs': [150, 181]})) == [
      ('optim.boundaries_epochs', '[150, 180]', '[150, 181]')]


def test_force_new_moves_the_old_run_aside(tmp_path, capsys):
  wd = str(tmp_path / 'run')
  _old_run(wd)
  before = _snapshot(wd)
  new = _json(**{'optim.lr': 0.1})
  assert workdir_lib.claim(wd, new, on_change='new') == 'new'
  moved = [d for d in os.listdir(tmp_path) if d.startswith('run.old-')]
  assert len(moved) == 1 and _snapshot(str(tmp_path / moved[0])) == before
  assert os.listdir(wd) == ['config.json'] and open(os.path.join(wd, 'config.json')).read() == new
  assert 'Moved the previous run (optim.lr: 0.05 -> 0.1)' in capsys.readouterr().out


def test_allow_config_change_keeps_run_and_old_config(tmp_path):
  wd = str(tmp_path / 'run')
  _old_run(wd)
  new = _json(**{'optim.lr': 0.1})
  assert workdir_lib.claim(wd, new, on_change='continue') == 'changed'
  kept = [f for f in os.listdir(wd) if f.startswith('config.old-')]
  assert len(kept) == 1 and open(os.path.join(wd, kept[0])).read() == _json()
  assert open(os.path.join(wd, 'config.json')).read() == new
  assert os.path.exists(os.path.join(wd, 'checkpoints', '22', 'x'))


def test_checkpoints_without_config_are_not_claimed(tmp_path):
  wd = str(tmp_path / 'run')
  os.makedirs(os.path.join(wd, 'checkpoints', '5'))
  with pytest.raises(workdir_lib.WorkdirError, match='no config.json'):
    workdir_lib.claim(wd, _json())


# ---- 3. lock ----

_HOLD = '''
import sys, time
from kdjax.train import workdir
workdir.WorkdirLock(sys.argv[1]).acquire()
print('locked', flush=True)
time.sleep(60)
'''


def test_second_process_is_refused_with_the_holder_named(tmp_path):
  wd = str(tmp_path)
  env = {**os.environ, 'PYTHONPATH': os.path.dirname(os.path.dirname(os.path.abspath(__file__)))}
  holder = subprocess.Popen([sys.executable, '-c', _HOLD, wd], stdout=subprocess.PIPE, text=True,
                            env=env)
  try:
    assert holder.stdout.readline().strip() == 'locked'
    with pytest.raises(workdir_lib.WorkdirError, match=rf'in use by process {holder.pid} on '):
      workdir_lib.WorkdirLock(wd).acquire()
  finally:
    holder.kill()
    holder.wait()
  # The holder died without releasing: its lock is stale and is taken over.
  lock = workdir_lib.WorkdirLock(wd).acquire()
  assert json.load(open(os.path.join(wd, '.lock')))['pid'] == os.getpid()
  lock.release()
  assert open(os.path.join(wd, '.lock')).read() == ''
  with workdir_lib.WorkdirLock(wd):  # released: can be taken again
    pass


def test_stale_lock_file_is_reported(tmp_path, capsys):
  open(tmp_path / '.lock', 'w').write(json.dumps({'pid': 999999, 'host': 'h'}))
  with workdir_lib.WorkdirLock(str(tmp_path)):
    pass
  assert 'stale lock of process 999999 on h' in capsys.readouterr().out


def test_read_only_workdir_is_one_clear_error(tmp_path):
  if os.geteuid() == 0:
    pytest.skip('root writes anywhere')
  os.chmod(tmp_path, 0o500)
  try:
    with pytest.raises(workdir_lib.WorkdirError, match='cannot write to workdir'):
      workdir_lib.check_writable(str(tmp_path / 'run'))
  finally:
    os.chmod(tmp_path, 0o700)


# ---- 2, 4, 6. checkpoints ----

def _tree(v):
  return {'w': np.full((4, 3), v, np.float32), 'step': np.array(v, np.int32)}


def _abstract():
  return {'w': np.zeros((4, 3), np.float32), 'step': np.array(0, np.int32)}


def _saved(d, steps):
  ck = ckpt_lib.Checkpointer(d, keep=5, asynchronous=False)
  for s in steps:
    ck.save(s, _tree(s))
  ck.close()


def test_empty_or_itemless_newest_folders_are_moved_aside_and_resume_continues(tmp_path, capsys):
  d = str(tmp_path / 'checkpoints')
  _saved(d, [10, 20])
  os.makedirs(os.path.join(d, '30'))                       # empty newest folder
  import shutil
  shutil.copytree(os.path.join(d, '20'), os.path.join(d, '25'))
  shutil.rmtree(os.path.join(d, '25', 'default'))           # missing its item subfolder
  ck = ckpt_lib.Checkpointer(d, keep=5, repair=True)
  assert ck.steps() == [10, 20]
  step, state = ck.restore_latest(_abstract())
  assert step == 20 and float(state['w'][0, 0]) == 20.0
  ck.save(30, _tree(30))  # the step is written again (it used to fail inside orbax)
  ck.close()
  broken = sorted(os.listdir(tmp_path / 'broken_checkpoints'))
  assert [b.split('.')[0] for b in broken] == ['25', '30']
  assert 'is incomplete; moved it to' in capsys.readouterr().out
  step, state = ckpt_lib.Checkpointer(d).restore_latest(_abstract())
  assert step == 30 and float(state['w'][0, 0]) == 30.0


def test_unreadable_final_checkpoint_is_saved_again(tmp_path):
  d = str(tmp_path / 'checkpoints')
  _saved(d, [10, 20])
  for root, _, files in os.walk(os.path.join(d, '20', 'default')):
    for f in files:
      open(os.path.join(root, f), 'w').close()  # truncated files, folder complete
  ck = ckpt_lib.Checkpointer(d, keep=5, repair=True)
  step, _ = ck.restore_latest(_abstract())
  assert step == 10 and ck.steps() == [10]
  ck.save(20, _tree(21))  # reached again: re-saved, not skipped
  ck.close()
  step, state = ckpt_lib.Checkpointer(d).restore_latest(_abstract())
  assert step == 20 and float(state['w'][0, 0]) == 21.0
  assert os.listdir(tmp_path / 'broken_checkpoints')[0].startswith('20.')


def test_read_only_restore_leaves_unreadable_checkpoints_in_place(tmp_path):
  d = str(tmp_path / 'checkpoints')
  _saved(d, [10, 20])
  for root, _, files in os.walk(os.path.join(d, '20', 'default')):
    for f in files:
      open(os.path.join(root, f), 'w').close()
  step, _ = ckpt_lib.Checkpointer(d).restore_latest(_abstract())  # eval / export: no repair
  assert step == 10 and os.path.isdir(os.path.join(d, '20'))


def test_full_disk_stops_with_one_line_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
  d = str(tmp_path / 'checkpoints')
  _saved(d, [10])
  original = ocp.CheckpointManager.save

  def full(self, step, *a, **k):
    if step == 20:
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return original(self, step, *a, **k)
  monkeypatch.setattr(ocp.CheckpointManager, 'save', full)
  ck = ckpt_lib.Checkpointer(d, keep=5, repair=True)
  with pytest.raises(ckpt_lib.CheckpointSaveError) as e:
    ck.save(20, _tree(20))
  msg = str(e.value)
  assert '\n' not in msg and f'could not write checkpoint 20 to {d}' in msg
  assert 'No space left on device' in msg and 'MiB needed' in msg and 'MiB free there' in msg
  assert 'previous checkpoint (step 10) is intact' in msg
  ck.close()
  step, state = ckpt_lib.Checkpointer(d).restore_latest(_abstract())
  assert step == 10 and float(state['w'][0, 0]) == 10.0


def test_failed_background_write_is_reported_at_the_next_check(tmp_path, monkeypatch):
  d = str(tmp_path / 'checkpoints')
  ck = ckpt_lib.Checkpointer(d, keep=5)
  ck.save(10, _tree(10))
  ck.manager.wait_until_finished()

  def boom():
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
  monkeypatch.setattr(ck.manager, 'check_for_errors', boom)
  with pytest.raises(ckpt_lib.CheckpointSaveError, match='checkpoint 10 .*No space left'):
    ck.check()


def test_restore_exported_says_when_a_run_has_no_checkpoint(tmp_path):
  with pytest.raises(FileNotFoundError, match='no checkpoint directory'):
    ckpt_lib.restore_exported(str(tmp_path / 'checkpoints'))


# ---- 5. TensorBoard history ----

def _events(tb_dir):
  """(tag, step) of every scalar in the event files (TFRecord framing, Event protos)."""
  from tensorboardX.proto import event_pb2
  out = []
  for name in sorted(os.listdir(tb_dir)):
    data = open(os.path.join(tb_dir, name), 'rb').read()
    i = 0
    while i < len(data):
      (n,) = struct.unpack('<Q', data[i:i + 8])
      ev = event_pb2.Event.FromString(data[i + 12:i + 12 + n])
      i += 12 + n + 4
      out.extend((v.tag, ev.step) for v in ev.summary.value)
  return sorted(out)


def test_tensorboard_is_rewritten_from_metrics_after_a_kill(tmp_path):
  wd = str(tmp_path)
  w = metrics_lib.MetricWriter(wd)
  w.truncate_after(-1)
  for s in (10, 20, 30):
    w.write(s, 'train', {'loss': 1.0 / s})
  w.close()  # the process is killed after step 30; the checkpoint kept is step 20
  w = metrics_lib.MetricWriter(wd)
  kept = w.truncate_after(20)
  assert [r['step'] for r in kept] == [10, 20]
  w.write(30, 'train', {'loss': 0.5})
  w.close()
  assert _events(os.path.join(wd, 'tensorboard')) == [('train/loss', 10), ('train/loss', 20),
                                                       ('train/loss', 30)]
  lines = [json.loads(l) for l in open(os.path.join(wd, 'metrics.jsonl'))]
  assert [(l['step'], l['loss']) for l in lines] == [(10, 0.1), (20, 0.05), (30, 0.5)]


def test_a_line_cut_short_by_a_kill_is_dropped(tmp_path):
  open(tmp_path / 'metrics.jsonl', 'w').write('{"step": 1, "kind": "train", "loss": 2.0}\n{"step": 2, "ki')
  kept = metrics_lib.MetricWriter(str(tmp_path)).truncate_after(5)
  assert kept == [{'step': 1, 'kind': 'train', 'loss': 2.0}]


# ---- 7. results ----

def test_strict_json_has_no_nan():
  out = workdir_lib.strict_json({'a': float('nan'), 'b': [1.0, float('inf')], 'c': {'d': 2}})
  assert out == {'a': None, 'b': [1.0, None], 'c': {'d': 2}}
  json.dumps(out, allow_nan=False)


def test_totals_restart_from_the_restored_step(tmp_path):
  t = workdir_lib.Totals(str(tmp_path))
  t.record(22, {'wall_time_sec': 10.0, 'train_time_sec': 4.0, 'train_images': 1408})
  t.record(44, {'wall_time_sec': 20.0, 'train_time_sec': 8.0, 'train_images': 2816})
  # A killed process resumes from step 22: its time after step 22 is not counted.
  t = workdir_lib.Totals(str(tmp_path))
  assert t.at(22) == {'wall_time_sec': 10.0, 'train_time_sec': 4.0, 'train_images': 1408.0}
  t.record(44, {'wall_time_sec': 25.0, 'train_time_sec': 8.5, 'train_images': 2816})
  assert sorted(json.load(open(tmp_path / 'totals.json'))['by_step']) == ['22', '44']
  assert t.at(0) == {'wall_time_sec': 0.0, 'train_time_sec': 0.0, 'train_images': 0.0}


def test_all_unreadable_are_moved_only_when_they_belong_to_this_run(tmp_path):
  d = str(tmp_path / 'checkpoints')
  _saved(d, [10])
  for root, _, files in os.walk(os.path.join(d, '10', 'default')):
    for f in files:
      open(os.path.join(root, f), 'w').close()
  ck = ckpt_lib.Checkpointer(d, repair=True)
  assert ck.restore_latest(_abstract()) is None and ck.steps() == [10]  # e.g. another model
  assert ck.restore_latest(_abstract(), all_unreadable_aside=True) is None and ck.steps() == []
  ck.save(10, _tree(10))  # a scratch run can save that step again
  ck.close()
  assert ckpt_lib.Checkpointer(d).restore_latest(_abstract())[0] == 10


def test_filesystem_without_locks_warns_and_runs(tmp_path, monkeypatch, capsys):
  import fcntl

  def no_locks(fd, op):
    if op & fcntl.LOCK_EX:
      raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))
  monkeypatch.setattr(fcntl, 'flock', no_locks)
  with workdir_lib.WorkdirLock(str(tmp_path)):
    pass
  assert 'has no file locks' in capsys.readouterr().out


def test_keys_added_to_the_schema_later_keep_old_runs():
  # A config.json written before `steps_per_dispatch` existed: the key takes its default.
  import json
  from kdjax import config as config_lib
  from kdjax.train import workdir as workdir_lib
  new = json.loads(config_lib.to_json(config_lib.base_config()))
  old = dict(new)
  del old['steps_per_dispatch']
  assert workdir_lib.diff(json.dumps(old), json.dumps(new)) == []
  new['steps_per_dispatch'] = 4
  assert workdir_lib.diff(json.dumps(old), json.dumps(new)) == [('steps_per_dispatch', 1, 4)]
