"""`kdjax report`: paper-layout tables from results.json, checked against hand-computed numbers."""

import json

import numpy as np
import pytest

from kdjax import config as config_lib, report


def _cfg(cell, **changes):
  c = config_lib.load(cell)
  config_lib.apply_overrides(c, [f'{k}={v}' for k, v in changes.items()])
  return c


def _run(root, name, cfg, seed, last, best, methods=(), params=None):
  d = root / name
  d.mkdir()
  cfg.seed = seed
  (d / 'config.json').write_text(config_lib.to_json(cfg))
  res = {'final': {'top1': last, 'top5': 0.9, 'epoch': 240.0}, 'best': {'top1': best},
         'seed': seed, 'model': cfg.model.name, 'teacher': cfg.teacher.arch or None,
         'methods': list(methods)}
  if params:
    res['params'] = params
  (d / 'results.json').write_text(json.dumps(res))
  return str(d)


RD = 'rd_cifar100:method={},teacher={},student={}'


@pytest.fixture
def runs(tmp_path):
  dirs = []
  for seed, (last, best) in enumerate([(0.70, 0.72), (0.74, 0.75), (0.72, 0.78)]):
    dirs.append(_run(tmp_path, f'kd_s{seed}', _cfg(RD.format('kd', 'resnet32x4', 'resnet8x4')),
                     seed, last, best, ['kd'], {'student': 1_230_000, 'teacher': 7_430_000, 'aux': 0}))
  for seed, last in enumerate([0.75, 0.76]):
    dirs.append(_run(tmp_path, f'crd_s{seed}', _cfg(RD.format('crd', 'resnet32x4', 'resnet8x4')),
                     seed, last, last, ['crd'],
                     {'student': 1_230_000, 'teacher': 7_430_000, 'aux': 150_000}))
  # Same method and pair, another hyper-parameter: its own row, never averaged with the above.
  dirs.append(_run(tmp_path, 'kd_t2', _cfg(RD.format('kd', 'resnet32x4', 'resnet8x4'),
                                           **{'distill.terms.kd.temperature': 2.0}),
                   0, 0.60, 0.61, ['kd']))
  for seed, last in enumerate([0.71, 0.73]):
    dirs.append(_run(tmp_path, f'kd_wrn_s{seed}', _cfg(RD.format('kd', 'wrn_40_2', 'wrn_16_2')),
                     seed, last, last, ['kd']))
  for seed, last in enumerate([0.69, 0.70]):  # the student row of resnet32x4 -> resnet8x4
    dirs.append(_run(tmp_path, f'r8x4_s{seed}', _cfg('rd_cifar100:arch=resnet8x4'), seed, last, last))
  dirs.append(_run(tmp_path, 'r32x4', _cfg('rd_cifar100:arch=resnet32x4'), 0, 0.79, 0.80))
  return dirs


def test_table_cells_are_mean_and_sample_std_per_experiment(runs):
  t = report.table(report.load(runs))
  a, b = 'resnet32x4 -> resnet8x4', 'wrn_40_2 -> wrn_16_2'
  assert t['columns'] == [a, b]
  assert t['rows'][:2] == ['teacher', 'student']
  c = t['cells']
  np.testing.assert_allclose(c['teacher', a]['mean'], 79.0)
  assert c['teacher', a]['n'] == 1 and ('teacher', b) not in c
  np.testing.assert_allclose([c['student', a]['mean'], c['student', a]['std']], [69.5, np.sqrt(0.5)])
  np.testing.assert_allclose([c['crd', a]['mean'], c['crd', a]['std']], [75.5, np.sqrt(0.5)])
  kd = [r for r in t['rows'] if r.startswith('kd')]
  assert len(kd) == 2   # the tau-2 run is a row of its own, labelled with what differs
  plain = [r for r in kd if '4.0' in r][0]
  other = [r for r in kd if '2.0' in r][0]
  assert 'distill.terms.kd.temperature' in other
  np.testing.assert_allclose([c[plain, a]['mean'], c[plain, a]['std']], [72.0, 2.0])  # .70 .74 .72
  assert c[plain, a]['n'] == 3 and c[plain, a]['seeds'] == [0, 1, 2]
  np.testing.assert_allclose(c[other, a]['mean'], 60.0)
  np.testing.assert_allclose(c[plain, b]['mean'], 72.0)
  np.testing.assert_allclose(c[plain, b]['std'], np.std([71, 73], ddof=1))


def test_best_epoch_and_error(runs):
  t = report.table(report.load(runs), metric='best', error=True)
  kd = [r for r in t['rows'] if r.startswith('kd') and '4.0' in r][0]
  s = t['cells'][kd, 'resnet32x4 -> resnet8x4']
  np.testing.assert_allclose(s['values'], [28.0, 25.0, 22.0])
  np.testing.assert_allclose([s['mean'], s['std']], [25.0, 3.0])


def test_formats_and_params(runs):
  t = report.table(report.load(runs), params=True)
  md = report.render(t, 'markdown')
  assert '| method | resnet32x4 -> resnet8x4 | wrn_40_2 -> wrn_16_2 |' in md
  assert '| crd | 75.50 ± 0.71 (1.23M +0.15M) | - |' in md
  assert '| teacher | 79.00 | - |' in md
  csv = report.render(t, 'csv').splitlines()
  assert csv[0].startswith('method,resnet32x4 -> resnet8x4 mean,resnet32x4 -> resnet8x4 std')
  assert 'crd,75.5000,0.7071,2,,,' in csv
  tex = report.render(t, 'latex')
  assert '75.50 $\\pm$ 0.71' in tex and 'resnet32x4 $\\to$ resnet8x4' in tex
  with pytest.raises(ValueError, match='format'):
    report.render(t, 'html')


def test_noise_columns_teacher_from_checkpoint_and_one_experiment_summary(tmp_path, capsys):
  teacher = _run(tmp_path, 'teacher', _cfg('kd_beyond_compression:data=cifar10,method=baseline,'
                                           'student=wrn_40_2,noise=0.2'), 0, 0.85, 0.86)
  dirs = []
  for noise, vals in ((0.2, (0.80, 0.82)), (0.4, (0.70, 0.71))):
    for seed, v in enumerate(vals):
      cfg = _cfg(f'kd_beyond_compression:data=cifar10,method=kd,student=wrn_16_2,noise={noise}',
                 **{'teacher.checkpoint': teacher})
      dirs.append(_run(tmp_path, f'n{noise}_s{seed}', cfg, seed, v, v, ['kd']))
  t = report.table(report.load(dirs))
  assert t['columns'] == ['wrn_40_2 -> wrn_16_2 (noise=0.2)', 'wrn_40_2 -> wrn_16_2 (noise=0.4)']
  np.testing.assert_allclose(t['cells']['kd', t['columns'][1]]['mean'], 70.5)
  np.testing.assert_allclose(t['cells']['teacher', t['columns'][0]]['mean'], 85.0)
  out = report.run(dirs[:2])
  np.testing.assert_allclose(out['summary']['last/top1']['mean'], 0.81)
  np.testing.assert_allclose(out['summary']['last/top1']['std'], np.std([0.8, 0.82], ddof=1))
  assert 'runs of one experiment, seeds [0, 1]' in capsys.readouterr().out
  with pytest.raises(FileNotFoundError, match='no results.json'):
    report.run([str(tmp_path)])


@pytest.mark.slow
def test_real_digits_runs(tmp_path):
  """Two seeds of a 1-epoch digits run: the table's cell is their results.json mean +- std."""
  from kdjax.train import train_and_evaluate
  dirs = []
  for seed in (0, 1):
    cfg = _cfg('digits:arch=resnet8', epochs=1, seed=seed, progress_bar=False,
               eval_every_epochs=1)
    d = str(tmp_path / f's{seed}')
    train_and_evaluate(cfg, d)
    dirs.append(d)
  t = report.table(report.load(dirs))
  top1 = [json.load(open(f'{d}/results.json'))['final']['top1'] for d in dirs]
  s = t['cells']['baseline', 'resnet8']
  np.testing.assert_allclose([s['mean'], s['std']], [100 * np.mean(top1), 100 * np.std(top1, ddof=1)])


def test_cli_flags(runs, capsys):
  from kdjax import main
  assert main.run(['report', *runs, '--best', '--error', '--format', 'csv']) == 0
  lines = capsys.readouterr().out.splitlines()
  crd = [l for l in lines if l.startswith('crd,')][0]
  assert crd == 'crd,24.5000,0.7071,2,,,'   # best top-1 .75 / .76 as error
