"""kdjax.data: digits, TFDS (mocked, through the real load path), corruptions, augmentation, folders."""

import csv
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tfds_helpers import prepare_metadata as _prepare_metadata

from kdjax import data
import subprocess
import sys

from kdjax.data import augment, digits, registry, tfds_source, transforms


# --------------------------------------------------------------------------- digits

@pytest.fixture(scope='module')
def digits_ds():
  return data.load({'name': 'digits'})


def test_digits_shapes_counts_and_dtypes(digits_ds):
  ds = digits_ds
  assert ds.in_memory and ds.train_stream is None and ds.test_stream is None
  assert ds.train_images.shape == (1437, 8, 8, 1) and ds.test_images.shape == (360, 8, 8, 1)
  assert ds.train_images.dtype == np.uint8 and ds.test_images.dtype == np.uint8
  assert ds.train_labels.dtype == np.int32 and ds.test_labels.dtype == np.int32
  assert ds.num_train == 1437 and ds.num_classes == 10 and ds.image_shape == (8, 8, 1)
  assert ds.train_images.max() == 255 and ds.train_images.min() == 0
  np.testing.assert_array_equal(ds.clean_train_labels, ds.train_labels)
  for labels in (ds.train_labels, ds.test_labels):
    assert set(np.unique(labels)) == set(range(10))


def test_digits_split_is_deterministic(digits_ds):
  (x1, y1), (t1, u1) = digits.arrays()
  np.testing.assert_array_equal(x1, digits_ds.train_images)
  np.testing.assert_array_equal(y1, digits_ds.train_labels)
  np.testing.assert_array_equal(t1, digits_ds.test_images)
  np.testing.assert_array_equal(u1, digits_ds.test_labels)
  assert len(x1) + len(t1) == 1797
  # Stratified: 35-37 test images per class.
  assert np.bincount(u1).min() >= 35 and np.bincount(u1).max() <= 37


def test_digits_constants_match_the_train_split(digits_ds):
  x = digits_ds.train_images.astype(np.float64) / 255
  np.testing.assert_allclose(digits.MEAN, [x.mean()], atol=1e-4)
  np.testing.assert_allclose(digits.STD, [x.std()], atol=1e-4)
  assert digits_ds.mean == digits.MEAN and digits_ds.std == digits.STD


def test_unknown_name_lists_known_and_suggests():
  with pytest.raises(ValueError, match=r"(?s)digits.*cifar100.*Did you mean 'cifar100'"):
    data.load({'name': 'cifar1000'})


# --------------------------------------------------------------------------- TFDS

@pytest.mark.parametrize('name,classes,mean', [('cifar10', 10, registry.CIFAR10_MEAN),
                                               ('cifar100', 100, (0.5071, 0.4867, 0.4408))])
def test_cifar_loads_through_data_source(tmp_path, name, classes, mean):
  import tensorflow_datasets as tfds
  _prepare_metadata(tmp_path, name, [('train', 50000), ('test', 10000)])
  with tfds.testing.mock_data(num_examples=24, data_dir=str(tmp_path)):
    ds = data.load({'name': name, 'data_dir': str(tmp_path)})
    noisy = data.load({'name': name, 'data_dir': str(tmp_path), 'label_noise': 0.5,
                       'label_noise_include_true': False, 'seed': 3})
  assert ds.in_memory and ds.num_classes == classes and ds.image_shape == (32, 32, 3)
  assert ds.train_images.shape == (24, 32, 32, 3) and ds.train_images.dtype == np.uint8
  assert ds.train_labels.dtype == np.int32 and ds.train_labels.max() < classes
  assert ds.num_train == 24 and ds.mean == tuple(mean)
  # Noise only touches the training split.
  assert (noisy.train_labels != noisy.clean_train_labels).sum() == 12
  np.testing.assert_array_equal(noisy.clean_train_labels, ds.train_labels)
  np.testing.assert_array_equal(noisy.test_labels, ds.test_labels)
  np.testing.assert_array_equal(noisy.test_images, ds.test_images)


def test_stl10_native_and_downsampled_to_32(tmp_path):
  """CRD's linear-probe STL-10: data.image_size=32 resamples the 96x96 images; 0 keeps them."""
  import tensorflow_datasets as tfds
  _prepare_metadata(tmp_path, 'stl10', [('train', 5000), ('test', 8000)])
  with tfds.testing.mock_data(num_examples=6, data_dir=str(tmp_path)):
    native = data.load({'name': 'stl10', 'data_dir': str(tmp_path), 'image_size': 0})
    small = data.load({'name': 'stl10', 'data_dir': str(tmp_path), 'image_size': 32})
  assert native.image_shape == (96, 96, 3) and native.train_images.shape == (6, 96, 96, 3)
  assert small.image_shape == (32, 32, 3) and small.test_images.shape == (6, 32, 32, 3)
  assert small.num_classes == 10 and small.mean == registry.STL10_MEAN
  np.testing.assert_array_equal(small.train_labels, native.train_labels)
  np.testing.assert_array_equal(small.train_images, data._resize_all(native.train_images, 32))


def test_resize_is_antialiased_bilinear():
  """A horizontal ramp 2x + 10 shrunk 3x: interior pixel i samples the input at 3i + 1."""
  ramp = np.tile((2 * np.arange(96) + 10)[None, :, None], (96, 1, 3)).astype(np.uint8)
  out = data._resize_all(ramp[None], 32)[0]
  assert out.shape == (32, 32, 3)
  np.testing.assert_array_equal(out[10, 1:31, 0], 6 * np.arange(1, 31) + 12)
  flat = np.full((1, 96, 96, 1), 77, np.uint8)
  np.testing.assert_array_equal(data._resize_all(flat, 32), 77)


def test_a_new_tfds_dataset_is_one_registry_entry(tmp_path, monkeypatch):
  import tensorflow_datasets as tfds
  spec = registry.DatasetSpec('my_cifar', 'tfds', 10, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25),
                              image_shape=(32, 32, 3), tfds_name='cifar10')
  monkeypatch.setitem(registry._SPECS, 'my_cifar', spec)
  _prepare_metadata(tmp_path, 'cifar10', [('train', 50000), ('test', 10000)])
  with tfds.testing.mock_data(num_examples=5, data_dir=str(tmp_path)):
    ds = data.load({'name': 'my_cifar', 'data_dir': str(tmp_path)})
  assert ds.name == 'my_cifar' and ds.mean == (0.5, 0.5, 0.5) and ds.train_images.shape[0] == 5
  assert data.spec('my_cifar') is spec
  with pytest.raises(ValueError, match='already registered'):
    registry.register(registry.get('cifar10'))
  with pytest.raises(ValueError, match='loader must be one of'):
    registry.DatasetSpec('x', 'csv', 10, None, None)
  with pytest.raises(ValueError, match='needs image_shape'):
    registry.DatasetSpec('x', 'tfds', 10, (0.5,), (0.5,))


def test_specs_of_the_registered_datasets():
  assert registry.names() == ('digits', 'cifar10', 'cifar100', 'stl10', 'imagenet2012', 'folder',
                              'fer2013')
  c100 = data.spec('cifar100')
  assert (c100.num_classes, c100.image_shape, c100.splits) == (100, (32, 32, 3), ('train', 'test'))
  assert c100.mean == (0.5071, 0.4867, 0.4408) and c100.std == (0.2675, 0.2565, 0.2761)
  inet = data.spec('imagenet2012')
  assert inet.splits == ('train', 'validation') and inet.num_classes == 1000
  assert data.spec('folder').mean is None and data.spec('fer2013').num_classes == 7


def test_train_and_bench_import_without_tfds_and_grain():
  """tensorflow_datasets / grain are imported only where data is read (accelerator images lack them)."""
  code = ('import sys, kdjax.train, kdjax.bench, kdjax.models, kdjax.data; '
          'from kdjax.data import registry; '
          "print(sorted(m for m in ('tensorflow_datasets', 'grain', 'tensorflow') if m in sys.modules))")
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True,
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  assert out.stdout.strip() == '[]', out.stdout + out.stderr


def test_missing_tfds_dataset_fails_fast_with_instructions(tmp_path):
  for name in ('cifar10', 'imagenet2012'):
    start = time.perf_counter()
    with pytest.raises(data.DatasetNotFoundError) as err:
      data.load({'name': name, 'data_dir': str(tmp_path / 'empty')})
    assert time.perf_counter() - start < 5
    msg = str(err.value)
    assert isinstance(err.value, FileNotFoundError)
    assert 'kdjax[prepare]' in msg and f'tfds build {name}' in msg
    assert '--file_format=array_record' in msg and str(tmp_path / 'empty') in msg
  assert 'manual_dir' in msg


def test_tfrecord_prepared_dataset_is_rejected(tmp_path):
  import tensorflow_datasets as tfds
  builder = tfds.builder('cifar10', data_dir=str(tmp_path))  # default file format: tfrecord
  os.makedirs(builder.data_dir)
  builder.info.write_to_directory(builder.data_dir)
  with pytest.raises(data.DatasetNotFoundError, match='not as array_record'):
    data.load({'name': 'cifar10', 'data_dir': str(tmp_path)})


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


def test_imagenet_stream_resumes_exactly(tmp_path):
  import tensorflow_datasets as tfds
  _prepare_metadata(tmp_path, 'imagenet2012', [('train', 1281167), ('validation', 50000)])
  with tfds.testing.mock_data(num_examples=10, data_dir=str(tmp_path)):
    ds = data.load({'name': 'imagenet2012', 'data_dir': str(tmp_path), 'image_size': 16})
    assert not ds.in_memory and ds.image_shape == (16, 16, 3) and ds.num_classes == 1000
    assert ds.num_train == 10 and ds.train_images is None
    full = _take(ds.train_stream(7, 0, 4), 6)            # 24 samples: crosses 2 epochs
    resumed = _take(ds.train_stream(7, 3, 4), 3)
    other_seed = _take(ds.train_stream(8, 0, 4), 1)
    test = list(ds.test_stream(4))
    src = tfds.data_source('imagenet2012', split='train', data_dir=str(tmp_path))
    true_labels = np.array([src[i]['label'] for i in range(10)])
  for batch in full:
    np.testing.assert_array_equal(batch['label'], true_labels[batch['index']])
    assert batch['image'].shape == (4, 16, 16, 3) and batch['image'].dtype == np.uint8
    assert batch['label'].dtype == np.int32 and batch['index'].dtype == np.int32
  for a, b in zip(full[3:], resumed):
    for key in ('image', 'label', 'index'):
      np.testing.assert_array_equal(a[key], b[key])
  # Epoch 1 = the first 10 samples: every record exactly once, and reshuffled in epoch 2.
  order = np.concatenate([b['index'] for b in full])
  assert sorted(order[:10]) == list(range(10)) and sorted(order[10:20]) == list(range(10))
  assert not np.array_equal(order[:10], order[10:20])
  assert not np.array_equal(other_seed[0]['index'], full[0]['index'])
  # Test: 10 records in batches of 4 -> 3 batches, last one padded and masked.
  assert len(test) == 3 and test[-1]['mask'].tolist() == [True, True, False, False]
  np.testing.assert_array_equal(np.concatenate([t['index'] for t in test])[:10], np.arange(10))
  assert test[0]['image'].shape == (4, 16, 16, 3)


def test_imagenet_preprocessing_shapes():
  rng = np.random.default_rng(0)
  img = rng.integers(0, 256, (40, 70, 3), dtype=np.uint8)
  out = tfds_source.train_preprocess(img, rng, 24)
  assert out.shape == (24, 24, 3) and out.dtype == np.uint8
  out = tfds_source.eval_preprocess(img, 24)
  assert out.shape == (24, 24, 3)
  top, left, h, w = tfds_source.random_resized_crop_box(rng, 40, 70)
  assert 0 <= top and top + h <= 40 and 0 <= left and left + w <= 70


# --------------------------------------------------------------------------- transforms

def test_label_noise_other_classes_exact_count_and_seeded():
  labels = np.repeat(np.arange(10), 100).astype(np.int32)
  out = transforms.symmetric_label_noise(labels, 0.37, 10, seed=1, include_true=False)
  assert (out != labels).sum() == round(0.37 * 1000)
  assert out.min() >= 0 and out.max() < 10 and out.dtype == np.int32
  np.testing.assert_array_equal(out, transforms.symmetric_label_noise(labels, 0.37, 10, 1,
                                                                      include_true=False))
  other = transforms.symmetric_label_noise(labels, 0.37, 10, 2, include_true=False)
  assert not np.array_equal(out, other)
  np.testing.assert_array_equal(labels, np.repeat(np.arange(10), 100))  # input untouched
  np.testing.assert_array_equal(transforms.symmetric_label_noise(labels, 0.0, 10, 1), labels)


def test_label_noise_default_includes_true_class():
  labels = np.repeat(np.arange(10), 1000).astype(np.int32)
  out = transforms.symmetric_label_noise(labels, 0.6, 10, seed=0)
  changed = (out != labels).sum()
  # 6000 resampled uniformly over all 10 classes: ~10% land on the true class.
  assert 6000 * 0.85 < changed < 6000 and changed < 6000 * 0.95
  strict = transforms.symmetric_label_noise(labels, 0.6, 10, seed=0, include_true=False)
  # Same seed, same corrupted samples in both conventions.
  assert set(np.flatnonzero(out != labels)) <= set(np.flatnonzero(strict != labels))


def test_imbalance_counts_ends_monotone_and_hand_value():
  for gamma in (0.2, 0.6, 1.0, 2.0):
    counts = transforms.imbalance_counts(10, gamma, 5000, 250)
    assert counts[0] == 5000 and counts[-1] == 250
    assert np.all(np.diff(counts) <= 0)
  counts = transforms.imbalance_counts(10, 1.0, 5000, 250)
  # b = -1/19, a = 4500/19: m_2 = a / (b + 1/2) = 9000/17 = 529.4
  assert counts[8] == 529
  # Smaller gamma -> heavier tail (fewer samples overall), as in Sarfraz et al.
  totals = [transforms.imbalance_counts(10, g).sum() for g in (0.2, 0.6, 1.0, 2.0)]
  assert totals == sorted(totals)


def test_power_law_imbalance_keeps_first_n_per_class():
  labels = np.tile(np.arange(10), 600).astype(np.int32)
  keep = transforms.power_law_imbalance(labels, 1.0, 500, 25, seed=0)
  counts = np.bincount(labels[keep], minlength=10)
  np.testing.assert_array_equal(counts, transforms.imbalance_counts(10, 1.0, 500, 25))
  np.testing.assert_array_equal(keep, transforms.power_law_imbalance(labels, 1.0, 500, 25, seed=0))
  assert not np.array_equal(keep, transforms.power_law_imbalance(labels, 1.0, 500, 25, seed=1))


def test_load_applies_corruptions_to_train_only(digits_ds):
  ds = data.load({'name': 'digits', 'label_noise': 0.2, 'label_noise_include_true': False,
                  'imbalance_gamma': 1.0, 'imbalance_max': 140, 'imbalance_min': 14, 'seed': 0})
  np.testing.assert_array_equal(np.bincount(ds.clean_train_labels, minlength=10),
                                transforms.imbalance_counts(10, 1.0, 140, 14))
  assert ds.num_train == len(ds.train_images) == len(ds.train_labels)
  assert (ds.train_labels != ds.clean_train_labels).sum() == round(0.2 * ds.num_train)
  np.testing.assert_array_equal(ds.test_labels, digits_ds.test_labels)
  np.testing.assert_array_equal(ds.test_images, digits_ds.test_images)


# --------------------------------------------------------------------------- augment

def _images(b=5, h=6, w=7, c=3):
  return jnp.asarray(np.random.default_rng(0).integers(0, 256, (b, h, w, c), dtype=np.uint8))


def test_crop_pad0_noflip_is_identity_and_flip_flips():
  x = _images()
  key = jax.random.key(0)
  out = augment.random_crop_flip(key, x, pad=0, flip=False)
  assert out.dtype == jnp.float32 and out.shape == x.shape
  np.testing.assert_array_equal(out, x.astype(jnp.float32))
  flipped = augment.random_crop_flip(key, jnp.repeat(x[:1], 64, 0), pad=0, flip=True)
  same = jnp.all(flipped == x[:1].astype(jnp.float32), axis=(1, 2, 3))
  mirror = jnp.all(flipped == x[:1, :, ::-1].astype(jnp.float32), axis=(1, 2, 3))
  assert bool(jnp.all(same | mirror)) and 10 < int(mirror.sum()) < 54


@pytest.mark.parametrize('pad_mode', ['constant', 'reflect'])
def test_crop_is_a_window_of_the_padded_image(pad_mode):
  x = _images(b=8)
  out = augment.random_crop_flip(jax.random.key(3), x, pad=2, flip=False, pad_mode=pad_mode)
  assert out.shape == x.shape
  padded = np.pad(np.asarray(x, np.float32), ((0, 0), (2, 2), (2, 2), (0, 0)), mode=pad_mode)
  for i in range(8):
    windows = [padded[i, r:r + 6, s:s + 7] for r in range(5) for s in range(5)]
    assert any(np.array_equal(np.asarray(out[i]), w) for w in windows)


def test_normalize():
  x = jnp.full((2, 3, 3, 3), 255, jnp.uint8)
  out = augment.normalize(x, (0.5, 0.5, 0.0), (0.5, 0.25, 1.0))
  np.testing.assert_allclose(out[0, 0, 0], [1.0, 2.0, 1.0])
  assert out.dtype == jnp.float32


def test_gather_batch_under_jit_covers_epoch_once():
  n, b = 23, 5
  images = jnp.arange(n, dtype=jnp.uint8)[:, None, None, None] * jnp.ones((1, 4, 4, 1), jnp.uint8)
  labels = jnp.arange(n, dtype=jnp.int32)

  @jax.jit
  def step(key, s):
    imgs, labs, idx = augment.gather_batch(images, labels, key, s, b)
    return augment.random_crop_flip(jax.random.fold_in(key, s), imgs, pad=1), labs, idx

  key = jax.random.key(11)
  seen = []
  for s in range(n // b):
    imgs, labs, idx = step(key, jnp.int32(s))
    assert imgs.shape == (b, 4, 4, 1) and idx.dtype == jnp.int32
    np.testing.assert_array_equal(labs, idx)
    seen.extend(np.asarray(idx).tolist())
  assert len(seen) == len(set(seen)) == (n // b) * b
  assert step._cache_size() == 1
  _, _, idx_other = step(jax.random.key(12), jnp.int32(0))
  assert not np.array_equal(idx_other, np.asarray(seen[:b]))


# --------------------------------------------------------------------------- folder / fer2013

def test_folder_dataset(tmp_path):
  from PIL import Image
  rng = np.random.default_rng(0)
  for split, per_class in (('train', 3), ('test', 2)):
    for cls in ('cat', 'dog'):
      os.makedirs(tmp_path / split / cls)
      for i in range(per_class):
        arr = rng.integers(0, 256, (20, 12, 3), dtype=np.uint8)
        ext = 'png' if i % 2 == 0 else 'jpg'
        Image.fromarray(arr).save(tmp_path / split / cls / f'{i}.{ext}')
  (tmp_path / 'train' / 'cat' / 'notes.txt').write_text('not an image')
  ds = data.load({'name': 'folder', 'path': str(tmp_path), 'image_size': 8})
  assert ds.num_classes == 2 and ds.image_shape == (8, 8, 3) and ds.num_train == 6
  assert ds.train_labels.tolist() == [0, 0, 0, 1, 1, 1] and ds.test_labels.tolist() == [0, 0, 1, 1]
  x = ds.train_images.astype(np.float64) / 255
  np.testing.assert_allclose(ds.mean, x.reshape(-1, 3).mean(0), atol=1e-6)
  np.testing.assert_allclose(ds.std, x.reshape(-1, 3).std(0), atol=1e-6)


def test_fer2013_csv(tmp_path):
  rng = np.random.default_rng(0)
  path = tmp_path / 'fer2013.csv'
  rows = [(i % 7, usage) for i, usage in enumerate(['Training'] * 5 + ['PublicTest'] * 3
                                                     + ['PrivateTest'] * 2)]
  with open(path, 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(['emotion', 'pixels', 'Usage'])
    for emotion, usage in rows:
      writer.writerow([emotion, ' '.join(map(str, rng.integers(0, 256, 48 * 48))), usage])
  ds = data.load({'name': 'fer2013', 'path': str(path), 'image_size': 32})
  assert ds.num_classes == 7 and ds.image_shape == (32, 32, 1)
  assert ds.train_images.shape == (5, 32, 32, 1) and ds.test_images.shape == (3, 32, 32, 1)
  assert ds.train_labels.tolist() == [0, 1, 2, 3, 4] and ds.test_labels.tolist() == [5, 6, 0]
  assert len(ds.mean) == 1 and len(ds.std) == 1


def test_steps_per_epoch_keeps_or_drops_the_last_batch():
  assert augment.steps_per_epoch(50000, 64) == 781                         # drop (default)
  assert augment.steps_per_epoch(50000, 64, drop_remainder=False) == 782   # RepDistiller
  assert augment.steps_per_epoch(640, 64, drop_remainder=False) == 10
  with pytest.raises(ValueError, match='exceeds'):
    augment.steps_per_epoch(10, 16)
  assert augment.steps_per_epoch(10, 16, drop_remainder=False) == 1
  # ... whose one masked batch holds every example once, padded by repeats.
  images = jnp.arange(10, dtype=jnp.uint8)[:, None]
  _, lab, idx, mask = augment.gather_batch_masked(images, jnp.arange(10), jax.random.key(0), 0, 16)
  assert sorted(np.asarray(idx)[np.asarray(mask)].tolist()) == list(range(10))
  assert int(mask.sum()) == 10 and lab.shape == (16,)


def test_masked_batches_cover_the_epoch_once_with_one_compile():
  images = jnp.arange(10, dtype=jnp.uint8)[:, None] * jnp.ones((10, 3), jnp.uint8)
  labels = jnp.arange(10, dtype=jnp.int32)
  key = jax.random.key(4)
  traces = []

  @jax.jit
  def masked(step):
    traces.append(1)
    return augment.gather_batch_masked(images, labels, key, step, 4)

  out = [masked(jnp.int32(s)) for s in range(3)]
  assert len(traces) == 1
  valid = np.concatenate([np.asarray(idx)[np.asarray(m)] for _, _, idx, m in out])
  assert sorted(valid.tolist()) == list(range(10))
  assert [np.asarray(m).tolist() for *_, m in out] == [[True] * 4, [True] * 4, [True, True, False, False]]
  for s in range(2):   # full batches equal the drop-remainder sampler's
    x, y, idx = augment.gather_batch(images, labels, key, s, 4)
    np.testing.assert_array_equal(idx, out[s][2])
    np.testing.assert_array_equal(x, out[s][0])
  x, y, idx, _ = out[2]
  np.testing.assert_array_equal(y, idx)                       # labels follow the indices
  np.testing.assert_array_equal(np.asarray(x)[:, 0], idx)     # padding rows are real images
