"""kdjax analyze: figures are written and decodable; the command runs every analysis end to end."""

import argparse
import os
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kdjax.analysis import cli, plots


def _check_figures(paths):
  assert paths
  for p in paths:
    assert os.path.getsize(p) > 1000, p
    if p.endswith('.png'):
      h, w = plots.image_check(p)
      assert h > 50 and w > 50
    else:
      with open(p, 'rb') as f:
        assert f.read(5) == b'%PDF-'


def test_every_figure_kind_is_written(tmp_path):
  out = str(tmp_path)
  r = np.random.default_rng(0)
  paths = []
  paths += plots.save(plots.heatmap(r.uniform(size=(3, 3)), list('abc'), list('abc'), title='t',
                                    xlabel='source', ylabel='target'), out, 'heat')
  paths += plots.save(plots.lines({'a': ([0, 1, 2], [1.0, None, 3.0])}, band={'a': [0.1, 0.1, 0.1]},
                                  xlabel='x', ylabel='y', title='t'), out, 'lines')
  paths += plots.save(plots.bars({'run': {'stage1': 3, 'stage2': 5}}, ylabel='n', title='t'), out, 'bars')
  paths += plots.save(plots.scatter_panels({'a': r.normal(size=(20, 2))}, r.integers(0, 10, 20), title='t'),
                      out, 'scatter')
  paths += plots.save(plots.image_grid(r.uniform(size=(2, 8, 8, 1)), {'m': r.normal(size=(2, 8, 8))},
                                       title='t'), out, 'grid')
  rel = {'edges': np.linspace(0, 1, 16).tolist(), 'accuracy': [np.nan] * 14 + [0.9], 'ece': 0.1}
  paths += plots.save(plots.reliability_diagrams({'run': rel}), out, 'rel')
  assert len(paths) == 12
  _check_figures(paths)


def _stub_dataset(n_test=40, n_train=60):
  r = np.random.default_rng(0)
  return types.SimpleNamespace(
      name='digits', num_classes=10, image_shape=(8, 8, 1), in_memory=True,
      test_images=r.integers(0, 256, (n_test, 8, 8, 1), dtype=np.uint8),
      test_labels=r.integers(0, 10, n_test).astype(np.int32),
      train_images=r.integers(0, 256, (n_train, 8, 8, 1), dtype=np.uint8),
      train_labels=r.integers(0, 10, n_train).astype(np.int32))


@pytest.mark.slow
def test_cli_all_analyses_on_tiny_resnets(tmp_path, monkeypatch):
  from kdjax import models
  from kdjax.analysis import runs
  model = models.create('resnet8', 10)
  nets = []
  for s in range(2):
    v = dict(model.init(jax.random.key(s), jnp.zeros((1, 8, 8, 1)), train=False))
    nets.append(runs.Net(f'n{s}', 'resnet8', model, v, np.array([0.3]), np.array([0.4])))
  perm = np.random.default_rng(0).permutation(64)
  nets[1].ie = runs.IESplit('last_map', perm, 32)
  ds = _stub_dataset()
  monkeypatch.setattr(runs, 'load_many', lambda workdirs: (nets, ds))
  workdir = tmp_path / 'run'
  workdir.mkdir()
  (workdir / 'config.json').write_text('{}')
  (workdir / 'metrics.jsonl').write_text('{"step": 5, "kind": "train", "loss/ce": 2.0, "train_accuracy": 0.2}\n'
                                        '{"step": 10, "kind": "eval", "epoch": 1.0, "top1": 0.3, "loss": 1.9}\n')
  p = argparse.ArgumentParser()
  cli.add_arguments(p)
  out = str(tmp_path / 'out')
  args = p.parse_args(['all', str(workdir), '--out', out, '--iters', '2', '--cka_examples', '20',
                       '--draws', '1', '--noise_scales', '0,0.01', '--sigmas', '0,0.1'])
  assert cli.run(args) == 0
  names = sorted(os.listdir(out))
  for w in cli.ANALYSES[:-1]:
    assert f'{w}.json' in names
  figs = [os.path.join(out, n) for n in names if n.endswith(('.png', '.pdf'))]
  assert len(figs) >= 2 * 13
  _check_figures(figs)
  index = open(os.path.join(out, 'index.md')).read()
  assert index.count('![') == len(figs) // 2


def test_bad_arguments_fail_before_loading(tmp_path):
  p = argparse.ArgumentParser()
  cli.add_arguments(p)
  with pytest.raises(FileNotFoundError, match='not a kdjax workdir'):
    cli.run(p.parse_args(['transfer', str(tmp_path)]))
  (tmp_path / 'config.json').write_text('{}')
  with pytest.raises(ValueError, match='eps'):
    cli.run(p.parse_args(['transfer', str(tmp_path), '--eps', '2']))
  with pytest.raises(ValueError, match='--sigmas'):
    cli.run(p.parse_args(['noise', str(tmp_path), '--sigmas', '0,a']))
