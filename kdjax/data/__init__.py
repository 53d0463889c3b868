"""kdjax.data: datasets for distillation, as in-memory arrays or grain streams.

Synopsis:
  ds = kdjax.data.load(cfg.data)       # -> Dataset
  if ds.in_memory:                     # digits, cifar10/100, stl10, folder, fer2013
    ds.train_images, ds.train_labels   # uint8 [N,H,W,C], int32 [N]; augmented on device
  else:                                # imagenet2012
    for batch in ds.train_stream(seed, start_step, global_batch): ...

Names (`kdjax.data.registry`, one `DatasetSpec` each): 'digits' (embedded,
offline), 'cifar10', 'cifar100', 'stl10', 'imagenet2012' (TFDS, prepared as
array_record, read without TensorFlow), 'folder' (train/<class>/*,
test/<class>/*) and 'fer2013' (the Kaggle CSV). A new TFDS dataset is one
`registry.register(DatasetSpec(...))`. tensorflow_datasets and grain are
imported only when a TFDS dataset is read.

`data.image_size` resizes: the streamed / local datasets always (default 224 for
ImageNet, 32 for folder / fer2013), and the in-memory TFDS sets when it differs
from their stored size (bilinear with antialiasing, as torchvision's Resize on
PIL images): `stl10` with image_size=32 is CRD's 32x32 STL-10 of the linear-probe
protocol; image_size=0 keeps the stored size.

Seed 002's corruptions (`label_noise`, `imbalance_gamma`) are applied to the
training split only, imbalance first, then noise on the kept samples; the
clean labels of the kept samples stay in `clean_train_labels`. See
`kdjax.data.transforms` for the exact conventions.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any, Callable, Iterable, Iterator, Mapping

import numpy as np

from kdjax.data import augment, digits, registry, transforms
from kdjax.data.registry import DatasetSpec
from kdjax.data.tfds_source import DatasetNotFoundError

__all__ = ['Dataset', 'DatasetNotFoundError', 'DatasetSpec', 'KNOWN', 'load', 'augment', 'registry',
           'transforms']

KNOWN = registry.names()   # the names registered when kdjax.data was imported


@dataclasses.dataclass
class Dataset:
  """A loaded dataset; in-memory fields or stream fields are set, never both."""
  name: str
  num_classes: int
  image_shape: tuple[int, int, int]        # H, W, C of the model input
  mean: tuple[float, ...]                  # per channel, applied to x / 255
  std: tuple[float, ...]
  num_train: int
  # In-memory datasets.
  train_images: np.ndarray | None          # uint8 [N, H, W, C]
  train_labels: np.ndarray | None          # int32 [N], after noise / imbalance
  test_images: np.ndarray | None
  test_labels: np.ndarray | None
  clean_train_labels: np.ndarray | None    # int32 [N], before label noise
  # Streamed datasets: train_stream(seed, start_step, global_batch) yields
  # {'image' uint8 [B,H,W,3], 'label' int32 [B], 'index' int32 [B]} per host;
  # test_stream(global_batch) yields the same plus 'mask' bool [B].
  train_stream: Callable[[int, int, int], Iterator[dict]] | None
  test_stream: Callable[[int], Iterable[dict]] | None
  in_memory: bool


def _get(cfg: Any, key: str, default: Any = None) -> Any:
  """cfg.key for a ConfigDict / mapping / object, `default` when absent or None."""
  if isinstance(cfg, Mapping) or hasattr(cfg, 'keys'):
    try:
      value = cfg[key]
    except (KeyError, AttributeError):
      value = None
  else:
    value = getattr(cfg, key, None)
  return default if value is None else value


def _stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
  """Per-channel mean / std of images / 255, accumulated in float64 without a full copy."""
  c = images.shape[-1]
  flat = images.reshape(-1, c)
  total = np.zeros(c)
  total_sq = np.zeros(c)
  for start in range(0, len(flat), 1 << 20):
    part = flat[start:start + (1 << 20)].astype(np.float64) / 255.0
    total += part.sum(0)
    total_sq += (part ** 2).sum(0)
  mean = total / len(flat)
  std = np.sqrt(np.maximum(total_sq / len(flat) - mean ** 2, 0.0))
  return tuple(float(m) for m in mean), tuple(float(max(s, 1e-6)) for s in std)


def _in_memory(name, num_classes, mean, std, train, test, cfg) -> Dataset:
  (x_train, y_train), (x_test, y_test) = train, test
  keep, noisy = transforms.apply_to_train(
      y_train, num_classes,
      label_noise=float(_get(cfg, 'label_noise', 0.0)),
      imbalance_gamma=float(_get(cfg, 'imbalance_gamma', 0.0)),
      imbalance_max=int(_get(cfg, 'imbalance_max', 5000)),
      imbalance_min=int(_get(cfg, 'imbalance_min', 250)),
      seed=int(_get(cfg, 'seed', _get(cfg, 'noise_seed', 0))),
      noise_include_true=bool(_get(cfg, 'label_noise_include_true', True)))
  if len(keep) != len(y_train):
    x_train = x_train[keep]
  return Dataset(
      name=name, num_classes=int(num_classes), image_shape=tuple(int(d) for d in x_train.shape[1:]),
      mean=tuple(float(m) for m in mean), std=tuple(float(s) for s in std),
      num_train=int(len(noisy)), train_images=np.ascontiguousarray(x_train, np.uint8),
      train_labels=noisy.astype(np.int32), test_images=np.ascontiguousarray(x_test, np.uint8),
      test_labels=np.asarray(y_test, np.int32),
      clean_train_labels=np.asarray(y_train, np.int32)[keep], train_stream=None,
      test_stream=None, in_memory=True)


def _resize_all(images: np.ndarray, size: int) -> np.ndarray:
  """uint8 [N,H,W,C] -> [N,size,size,C], PIL bilinear (antialiased when shrinking)."""
  from PIL import Image
  out = np.empty((len(images), size, size, images.shape[-1]), np.uint8)
  for i, img in enumerate(images):
    pil = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)
    arr = np.asarray(pil.resize((size, size), Image.BILINEAR), np.uint8)
    out[i] = arr[..., None] if arr.ndim == 2 else arr
  return out


def _load_embedded(spec: DatasetSpec, cfg: Any) -> Dataset:
  if spec.name != 'digits':
    raise ValueError(f'no embedded data for {spec.name!r}')
  train, test = digits.arrays()
  return _in_memory(spec.name, spec.num_classes, spec.mean, spec.std, train, test, cfg)


def _load_tfds(spec: DatasetSpec, cfg: Any) -> Dataset:
  from kdjax.data import tfds_source
  train, test = tfds_source.load_arrays(spec.source_name, _get(cfg, 'data_dir') or None,
                                        spec.splits, spec.image_shape)
  size = int(_get(cfg, 'image_size', 0))
  if size and spec.resizable and size != spec.image_shape[0]:
    train = (_resize_all(train[0], size), train[1])
    test = (_resize_all(test[0], size), test[1])
  return _in_memory(spec.name, spec.num_classes, spec.mean, spec.std, train, test, cfg)


def _load_local(spec: DatasetSpec, cfg: Any) -> Dataset:
  from kdjax.data import folder
  path = _get(cfg, 'path')
  if not path:
    kind = 'directory' if spec.loader == 'folder' else 'CSV file'
    raise ValueError(f'dataset {spec.name!r} needs data.path (the {kind})')
  image_size = int(_get(cfg, 'image_size', spec.default_image_size))
  if spec.loader == 'folder':
    train, test, classes = folder.load_folder(path, image_size)
    num_classes = len(classes)
  else:
    train, test = folder.load_fer2013(path, image_size)
    num_classes = len(folder.FER2013_CLASSES)
  mean, std = (spec.mean, spec.std) if spec.mean is not None else _stats(train[0])
  return _in_memory(spec.name, num_classes, mean, std, train, test, cfg)


def _load_stream(spec: DatasetSpec, cfg: Any) -> Dataset:
  if float(_get(cfg, 'label_noise', 0.0)) > 0 or float(_get(cfg, 'imbalance_gamma', 0.0)) > 0:
    raise ValueError('label_noise / imbalance_gamma are implemented for in-memory datasets only, '
                     f'not the streamed {spec.name!r}')
  from kdjax.data import tfds_source
  image_size = int(_get(cfg, 'image_size', spec.default_image_size))
  train_stream, test_stream, num_train = tfds_source.imagenet_streams(
      _get(cfg, 'data_dir') or None, image_size, name=spec.source_name, splits=spec.splits)
  return Dataset(
      name=spec.name, num_classes=spec.num_classes, image_shape=(image_size, image_size, 3),
      mean=spec.mean, std=spec.std, num_train=int(num_train), train_images=None,
      train_labels=None, test_images=None, test_labels=None, clean_train_labels=None,
      train_stream=train_stream, test_stream=test_stream, in_memory=False)


_LOADERS = {'embedded': _load_embedded, 'tfds': _load_tfds, 'tfds_stream': _load_stream,
            'folder': _load_local, 'fer2013': _load_local}


def spec(name: str) -> DatasetSpec:
  """The registered DatasetSpec of `name` (num_classes, mean/std, splits, ...), nothing read."""
  return registry.get(name)


def load(cfg: Any) -> Dataset:
  """Loads the dataset described by a data config (ConfigDict or mapping).

  Fields: name; data_dir (TFDS; ''/None = $TFDS_DATA_DIR or ~/tensorflow_datasets);
  path (folder / fer2013); image_size (streams and local files: their size;
  in-memory TFDS sets: resample when different, 0 = stored size);
  label_noise (sigma); label_noise_include_true (default True, see
  transforms.symmetric_label_noise); imbalance_gamma (0 = off); imbalance_max
  (5000); imbalance_min (250); seed (or noise_seed) for noise / imbalance.

  Raises:
    ValueError: unknown name (with the known ones and a did-you-mean), or
      noise / imbalance requested for a streamed dataset.
    DatasetNotFoundError: a TFDS dataset is not prepared in data_dir; the
      message says how to prepare it.
  """
  ds_spec = registry.get(str(_get(cfg, 'name', '')))
  return _LOADERS[ds_spec.loader](ds_spec, cfg)
