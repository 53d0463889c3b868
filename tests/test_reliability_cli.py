"""Bad input gets one clear line before any compile: exit status 2, no traceback.

In-process `kdjax.main.run` with compilation forbidden, so each case also
proves the error comes before any XLA work.
"""

import json
import os

import pytest

from kdjax import main, validate
from kdjax.train import loop

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEACHER8 = os.path.join(ROOT, 'configs', 'digits', 'teacher_resnet8.py')
KD = os.path.join(ROOT, 'configs', 'digits', 'kd_resnet20_resnet8.py')


@pytest.fixture(autouse=True)
def no_compile(monkeypatch):
  def forbidden(*a, **k):
    raise AssertionError('compiled before reporting bad input')
  monkeypatch.setattr(loop, 'compile_stage', forbidden)
  monkeypatch.setattr(loop, 'Evaluator', forbidden)


def _run(capsys, *argv):
  code = main.run(list(argv))
  err = capsys.readouterr().err
  return code, err


def _one_line(err):
  lines = err.strip().splitlines()
  assert len(lines) == 1 and 'Traceback' not in err, err
  return lines[0]


@pytest.mark.parametrize('override,expected', [
    ('--config.optim.lr=abc', "--config.optim.lr=abc: expected a number (currently 0.05)"),
    ('--config.epochs=1.5', '--config.epochs=1.5: expected an integer (currently 15)'),
    ('--config.progress_bar=maybe', 'expected true or false'),
    ('--config.optim.lr=0', 'optim.lr must be > 0, got 0.0'),
    ('--config.optim.lr=-0.1', 'optim.lr must be > 0, got -0.1'),
    ('--config.epochs=0', 'epochs must be > 0, got 0'),
    ('--config.eval_every_epochs=0', 'eval_every_epochs must be > 0, got 0'),
    ('--config.data.label_noise=1.5', 'data.label_noise must be in [0, 1], got 1.5'),
    ('--config.optim.zzz=1', "unknown config key 'optim.zzz'; the keys in optim are: "
     "optim.adam_b1, optim.adam_b2, optim.adam_eps, optim.base_batch_size, optim.batch_size"),
])
def test_bad_override_is_one_line(capsys, tmp_path, override, expected):
  code, err = _run(capsys, 'train', '--config', TEACHER8, '--workdir', str(tmp_path / 'run'), override)
  assert code == 2
  assert expected in _one_line(err)
  assert not os.path.exists(tmp_path / 'run')


@pytest.mark.parametrize('source,expected', [
    ('', 'is empty: a config file defines `def get_config(arg=None):`'),
    ('x = 1\n', 'defines no get_config(): a config file defines'),
    ('def get_config(:\n', 'line 1: invalid syntax'),
])
def test_bad_config_file_is_one_line(capsys, tmp_path, source, expected):
  path = tmp_path / 'cfg.py'
  path.write_text(source)
  code, err = _run(capsys, 'train', '--config', str(path), '--workdir', str(tmp_path / 'run'))
  assert code == 2 and expected in _one_line(err)


def test_unwritable_workdir_is_one_line(capsys, tmp_path):
  (tmp_path / 'file').write_text('')
  code, err = _run(capsys, 'train', '--config', TEACHER8, '--workdir', str(tmp_path / 'file' / 'run'))
  assert code == 2 and 'cannot write to workdir' in _one_line(err)


def test_teacher_without_checkpoints_says_what_to_do(capsys, tmp_path):
  teacher = tmp_path / 'teacher'
  teacher.mkdir()
  (teacher / 'config.json').write_text(json.dumps({'model': {'name': 'resnet20'},
                                                   'data': {'name': 'digits'}}))
  code, err = _run(capsys, 'train', '--config', KD, '--workdir', str(tmp_path / 'kd'),
                   f'--config.teacher.checkpoint={teacher}')
  line = _one_line(err)
  assert code == 2 and f'The run in {teacher} has not saved a checkpoint yet' in line


def test_flags_exclude_each_other(capsys, tmp_path):
  code, err = _run(capsys, 'train', '--config', TEACHER8, '--workdir', str(tmp_path), '--force_new',
                   '--allow_config_change')
  assert code == 2 and 'exclude each other' in _one_line(err)


def test_stage_values_are_checked():
  from kdjax.config import import_module
  recipes = import_module('common')  # configs/common.py
  cfg = recipes.digits('resnet8')
  with cfg.unlocked():
    cfg.stages = ({'name': 'init', 'epochs': 0}, {'name': 'main', 'optim': {'lr': -1.0}})
  with pytest.raises(validate.ConfigError, match=r'stages\[0\]\.epochs must be > 0'):
    validate.check_config(cfg)
  cfg.stages = ({'name': 'main', 'optim': {'lr': -1.0}},)
  with pytest.raises(validate.ConfigError, match=r'stages\[0\]\.optim\.lr must be > 0, got -1.0'):
    validate.check_config(cfg)
