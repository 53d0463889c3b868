"""The quickstart: its table and figure (fast, from synthetic runs) and the whole demo (slow)."""

import json
import os

import pytest

from kdjax import quickstart


def _result(last, best, seed=0):
  return {'final': {'top1': last}, 'best': {'top1': best}, 'seed': seed}


def test_table_shows_each_run_and_the_gain():
  labels = [r[0] for r in quickstart.RUNS]
  text = quickstart.table({labels[0]: _result(0.9, 0.95), labels[1]: _result(0.8, 0.85),
                           labels[2]: _result(0.8625, 0.87)})
  lines = text.splitlines()
  assert lines[2].split()[-2:] == ['0.8000', '0.8500']
  assert lines[-1] == '  KD gain over the baseline: +6.25 points of test top-1 (last epoch)'


def test_figure_has_one_curve_per_run(tmp_path):
  for i, (_, sub, _) in enumerate(quickstart.RUNS):
    os.makedirs(tmp_path / sub)
    with open(tmp_path / sub / 'metrics.jsonl', 'w') as f:
      for e in (1, 2, 3):
        f.write(json.dumps({'step': 22 * e, 'kind': 'train', 'loss': 1.0}) + '\n')
        f.write(json.dumps({'step': 22 * e, 'kind': 'eval', 'epoch': float(e), 'top1': 0.1 * e + i}) + '\n')
  curves = quickstart.curves(str(tmp_path))
  assert list(curves) == [r[0] for r in quickstart.RUNS]
  assert curves[quickstart.RUNS[2][0]] == [(1.0, 2.1), (2.0, 2.2), (3.0, 2.3)]
  path = quickstart.plot(str(tmp_path), str(tmp_path / 'q.png'), 'title')
  assert open(path, 'rb').read(8) == b'\x89PNG\r\n\x1a\n'


def test_noise_setting_reaches_every_run():
  for _, _, config_file in quickstart.RUNS:
    cfg = quickstart._config(config_file, ['seed=3'])
    assert cfg.data.label_noise == quickstart.NOISE_RATE and cfg.seed == 3


@pytest.mark.slow
def test_quickstart_runs_end_to_end(tmp_path, capsys):
  results = quickstart.run(str(tmp_path), ['epochs=1'])
  out = capsys.readouterr().out
  assert 'KD gain over the baseline' in out and os.path.exists(tmp_path / 'quickstart.png')
  kd = results[quickstart.RUNS[2][0]]
  assert kd['methods'] == ['kd'] and kd['teacher'] == 'resnet20'
