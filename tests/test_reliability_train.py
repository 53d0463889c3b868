"""End-to-end workdir reliability on digits: resume totals, reruns, failed saves, exports.

One small run (resnet8, 2 epochs, stopped at step 30 and resumed) is shared
by most tests; the heavier scenarios are marked slow.
"""

import errno
import json
import os
import re
import shutil
import struct

import jax
import numpy as np
import pytest

from kdjax import data as data_lib
from kdjax import models
from kdjax.train import checkpoint as ckpt_lib
from kdjax.train import loop
from kdjax.train import workdir as workdir_lib
from test_train import kd_cfg, tiny

# The README's "load an export and predict" lines (images: uint8 [N, H, W, C]).
PREDICT = '''
import json, numpy as np, flax.serialization
from kdjax import models
meta = json.load(open('student.msgpack.json'))
net = models.create(meta['model'], meta['num_classes'], **meta['model_kwargs'])
variables = flax.serialization.msgpack_restore(open('student.msgpack', 'rb').read())
mean, std = (np.array(meta['input'][k], np.float32) for k in ('mean', 'std'))
logits, _ = net.apply(variables, (images / np.float32(255) - mean) / std, train=False, **meta['apply_kwargs'])
'''


def _strict(path):
  def bad(name):
    raise ValueError(f'{path} holds {name}')
  return json.load(open(path), parse_constant=bad)


def _cfg():
  return tiny('resnet8', epochs=2, log_every_steps=1)


@pytest.fixture(scope='module')
def finished(tmp_path_factory):
  """(workdir, results, stdout) of a run stopped at step 30 and resumed to the end (44)."""
  wd = str(tmp_path_factory.mktemp('run') / 'resnet8_run')
  import contextlib
  import io
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    part = loop.train_and_evaluate(_cfg(), wd, stop_after_steps=30)
    assert part == {'interrupted': True, 'step': 30}
    res = loop.train_and_evaluate(_cfg(), wd)
  return wd, res, out.getvalue()


def test_results_are_strict_json_with_totals_over_both_processes(finished):
  wd, res, _ = finished
  assert _strict(os.path.join(wd, 'results.json')) == res
  assert res['final']['epoch'] == 2.0 and res['best']['epoch'] in (1.0, 2.0)
  totals = json.load(open(os.path.join(wd, 'totals.json')))['by_step']
  assert sorted(totals, key=int) == ['22', '30', '44']
  # Steady-state images: steps 2..30 in the first process, 32..44 in the
  # second (each process's first step compiles and is not timed).
  assert res['train_images'] == (29 + 13) * 64
  assert res['wall_time_sec'] == totals['44']['wall_time_sec'] > totals['30']['wall_time_sec'] > 0
  assert res['train_images_per_sec'] == pytest.approx(res['train_images'] / res['train_time_sec'])


def test_results_record_parameter_counts(finished):
  _, res, _ = finished
  net = models.create('resnet8', 10)
  shapes = jax.eval_shape(lambda: net.init(jax.random.key(0), np.zeros((1, 8, 8, 1)), train=False))
  want = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(shapes['params']))
  assert res['params'] == {'student': want, 'teacher': 0, 'aux': 0}
  assert want == 77754


def test_epoch_mean_training_accuracy_is_recorded(finished):
  wd, _, _ = finished
  records = [json.loads(l) for l in open(os.path.join(wd, 'metrics.jsonl'))]
  steps = [r for r in records if r['kind'] == 'train']
  assert [r['step'] for r in steps] == list(range(1, 45))  # log_every_steps=1, each once
  epochs = [r for r in records if r['kind'] == 'train_epoch']
  assert [(r['step'], r['epoch']) for r in epochs] == [(22, 1.0), (44, 2.0)]
  for e, first in zip(epochs, (1, 23)):
    acc = [r['train_accuracy'] for r in steps if first <= r['step'] < first + 22]
    assert e['train_accuracy'] == pytest.approx(np.mean(acc), rel=1e-12)


def test_one_readable_line_per_evaluation(finished):
  _, res, out = finished
  lines = [l for l in out.splitlines() if l.startswith('epoch ')]
  assert len(lines) == 2, out
  assert re.fullmatch(r'epoch 1/2  top1 0\.\d{4}  loss \d+\.\d{3}  \d+\.\d s/epoch', lines[0])
  assert lines[1].startswith(f'epoch 2/2  top1 {res["final"]["top1"]:.4f}  loss ')


def test_tensorboard_has_each_step_once_after_resume(finished):
  from tensorboardX.proto import event_pb2
  wd, _, _ = finished
  seen = []
  tb = os.path.join(wd, 'tensorboard')
  for name in os.listdir(tb):
    blob, i = open(os.path.join(tb, name), 'rb').read(), 0
    while i < len(blob):
      (n,) = struct.unpack('<Q', blob[i:i + 8])
      ev = event_pb2.Event.FromString(blob[i + 12:i + 12 + n])
      seen += [ev.step for v in ev.summary.value if v.tag == 'train/loss/total']
      i += 12 + n + 4
  assert sorted(seen) == list(range(1, 45))


def test_rerun_or_kill_before_results_rewrites_the_same_results(finished):
  wd, res, _ = finished
  os.remove(os.path.join(wd, 'results.json'))  # killed between the last checkpoint and results
  again = loop.train_and_evaluate(_cfg(), wd)
  assert again == res
  assert _strict(os.path.join(wd, 'results.json')) == res


def test_other_config_is_refused_before_anything_is_written(finished):
  wd, _, _ = finished
  files = lambda: {f: os.path.getmtime(os.path.join(wd, f)) for f in os.listdir(wd) if f != '.lock'}
  before = files()
  with pytest.raises(workdir_lib.WorkdirError, match=r"optim\.lr: 0\.05 -> 0\.1\).*--force_new"):
    loop.train_and_evaluate(tiny('resnet8', epochs=2, **{'optim.lr': 0.1}), wd)
  assert files() == before


def test_export_records_normalisation_and_the_readme_lines_predict(finished, tmp_path, monkeypatch):
  wd, res, _ = finished
  meta = loop.export_student(wd, str(tmp_path / 'student.msgpack'))
  ds = data_lib.load(_cfg().data)
  assert meta['input']['mean'] == list(ds.mean) and meta['input']['std'] == list(ds.std)
  assert meta['input']['shape'] == [8, 8, 1] and meta['apply_kwargs'] == {}
  monkeypatch.chdir(tmp_path)
  scope = {'images': ds.test_images}
  exec(PREDICT, scope)
  top1 = float((np.asarray(scope['logits']).argmax(-1) == ds.test_labels).mean())
  assert abs(top1 - res['final']['top1']) <= 1 / 360 + 1e-12


@pytest.mark.slow
def test_full_disk_stops_at_once_and_the_same_command_resumes(finished, tmp_path, monkeypatch,
                                                              capsys):
  _, res, _ = finished
  wd = str(tmp_path / 'run')
  real_save = ckpt_lib.Checkpointer.save

  def full(self, step, state):
    if step == 44:
      import orbax.checkpoint as ocp
      orig = ocp.CheckpointManager.save
      def enospc(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
      ocp.CheckpointManager.save = enospc
      try:
        return real_save(self, step, state)
      finally:
        ocp.CheckpointManager.save = orig
    return real_save(self, step, state)
  monkeypatch.setattr(ckpt_lib.Checkpointer, 'save', full)
  with pytest.raises(ckpt_lib.CheckpointSaveError, match='checkpoint 44 .*No space left on device'):
    loop.train_and_evaluate(_cfg(), wd)
  assert not os.path.exists(os.path.join(wd, 'results.json'))
  assert ckpt_lib.Checkpointer(os.path.join(wd, 'checkpoints')).steps() == [22]
  monkeypatch.setattr(ckpt_lib.Checkpointer, 'save', real_save)
  again = loop.train_and_evaluate(_cfg(), wd)  # space freed: the same command resumes
  assert 'Resuming from checkpoint step 22' in capsys.readouterr().out
  assert again['final'] == res['final']


@pytest.mark.slow
def test_workdir_stands_alone_teacher_path_absolute(finished, tmp_path, monkeypatch):
  wd, _, _ = finished
  teacher = tmp_path / 'runs' / 'teacher'
  shutil.copytree(wd, teacher)
  monkeypatch.chdir(tmp_path / 'runs')
  kd = str(tmp_path / 'runs' / 'kd')
  loop.train_and_evaluate(kd_cfg('teacher'), kd)  # given relative to the current directory
  assert json.load(open(os.path.join(kd, 'config.json')))['teacher']['checkpoint'] == str(teacher)
  monkeypatch.chdir('/')
  assert loop.evaluate_workdir(kd)['teacher_agreement'] > 0
  shutil.move(str(teacher), str(tmp_path / 'elsewhere'))
  with pytest.raises(FileNotFoundError, match=f'is not there; tried {teacher}. Put the teacher'):
    loop.evaluate_workdir(kd)
