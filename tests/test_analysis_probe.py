"""`kdjax analyze probe` through the real TFDS loading path (tfds.testing.mock_data, no TensorFlow).

What is exercised: `kdjax.data.load` -> tfds_source.check_prepared / open_split ->
`tfds.data_source` over prepared metadata (tests/tfds_helpers.py writes the
dataset_info.json `tfds build` would; mock_data serves random records of the
real feature spec: STL-10 96x96x3, CIFAR-10 32x32x3), the 96 -> 32 resampling of
`data.image_size`, the network's own normalisation, the probe and its figure.
Only the image content is fake.
"""

import argparse
import json
import os
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kdjax import data, models
from kdjax.analysis import cli, plots, probe as probe_lib, runs
from kdjax.data import registry
from tfds_helpers import prepare_metadata

SPLITS = {'stl10': [('train', 5000), ('test', 8000), ('unlabelled', 100000)],
          'cifar10': [('train', 50000), ('test', 10000)]}


def _cifar100_student(monkeypatch, tmp_path):
  """A resnet8 'trained on CIFAR-100' (32x32x3, CIFAR-100 constants) behind a fake workdir."""
  model = models.create('resnet8', 100)
  v = dict(model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False))
  net = runs.Net('student', 'resnet8', model, v, np.asarray(registry.CIFAR100_MEAN, np.float32),
                 np.asarray(registry.CIFAR100_STD, np.float32))
  ds = types.SimpleNamespace(name='cifar100', num_classes=100, image_shape=(32, 32, 3), in_memory=True)
  monkeypatch.setattr(runs, 'load_many', lambda workdirs: ([net], ds))
  workdir = tmp_path / 'student'
  workdir.mkdir()
  (workdir / 'config.json').write_text('{}')
  return net, str(workdir)


def _parse(argv):
  p = argparse.ArgumentParser()
  cli.add_arguments(p)
  return p.parse_args(argv)


@pytest.mark.parametrize('name,native', [('stl10', 96), ('cifar10', 32)])
def test_probe_reads_the_real_tfds_path_and_downsamples(tmp_path, monkeypatch, name, native):
  import tensorflow_datasets as tfds
  net, workdir = _cifar100_student(monkeypatch, tmp_path)
  data_dir = str(tmp_path / 'tfds')
  prepare_metadata(data_dir, name, SPLITS[name])
  seen = []
  real = probe_lib.penultimate
  monkeypatch.setattr(probe_lib, 'penultimate', lambda n, x, bs: seen.append(x) or real(n, x, bs))
  out = str(tmp_path / 'out')
  with tfds.testing.mock_data(num_examples=12, data_dir=data_dir):
    assert cli.run(_parse(['probe', workdir, '--probe_data', name, '--probe_data_dir', data_dir,
                           '--probe_steps', '30', '--out', out])) == 0
    stored = data.load({'name': name, 'data_dir': data_dir, 'image_size': 0})
  assert stored.train_images.shape == (12, native, native, 3)
  # The probe saw the train then the test split, downsampled by kdjax.data (PIL bilinear), in [0, 1].
  xtr, xte = seen
  assert xtr.shape == xte.shape == (12, 32, 32, 3) and xtr.dtype == np.float32
  want_tr = data._resize_all(stored.train_images, 32) if native != 32 else stored.train_images
  np.testing.assert_array_equal(xtr, want_tr.astype(np.float32) / 255.0)
  # ... normalised with the network's own (CIFAR-100) constants, as its test images are.
  xn = (want_tr / 255.0 - np.asarray(registry.CIFAR100_MEAN)) / np.asarray(registry.CIFAR100_STD)
  f = net.model.apply(net.variables, jnp.asarray(xn, jnp.float32), train=False)[1]['pooled']
  np.testing.assert_allclose(real(net, xtr, 5), np.asarray(f), rtol=1e-4, atol=1e-4)
  res = json.load(open(os.path.join(out, 'probe.json')))
  assert res['probe_data'] == name and res['image_size'] == 32
  assert res['num_train'] == res['num_test'] == 12 and res['source_image_shape'] == [32, 32, 3]
  r = res['nets']['student']
  assert 0 <= r['top1'] <= 1 and np.isfinite(r['train_loss'])
  png = os.path.join(out, f'probe_{name}.png')
  h, w = plots.image_check(png)
  assert h > 50 and w > 50
  assert open(png[:-3] + 'pdf', 'rb').read(5) == b'%PDF-'


def test_missing_probe_dataset_names_the_build_command(tmp_path, monkeypatch):
  loaded = []
  monkeypatch.setattr(runs, 'load_many', lambda w: loaded.append(w))
  workdir = tmp_path / 'student'
  workdir.mkdir()
  (workdir / 'config.json').write_text('{}')
  empty = str(tmp_path / 'empty')
  with pytest.raises(data.DatasetNotFoundError,
                     match=rf"(?s)'stl10' is not prepared.*tfds build stl10 --data_dir {empty} "
                     r'--file_format=array_record'):
    cli.run(_parse(['probe', str(workdir), '--probe_data', 'stl10', '--probe_data_dir', empty]))
  assert not loaded  # failed before any run was read or anything compiled
  with pytest.raises(ValueError, match="Did you mean 'stl10'"):
    cli.run(_parse(['probe', str(workdir), '--probe_data', 'stl11']))
  with pytest.raises(ValueError, match='is streamed'):
    cli.run(_parse(['probe', str(workdir), '--probe_data', 'imagenet2012']))
  with pytest.raises(ValueError, match='give --probe_path'):
    cli.run(_parse(['probe', str(workdir), '--probe_data', 'folder']))
  with pytest.raises(ValueError, match='--probe_steps'):
    cli.run(_parse(['probe', str(workdir), '--probe_steps', '0']))
