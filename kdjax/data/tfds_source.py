"""TFDS datasets without TensorFlow: prepared ArrayRecord data read through `tfds.data_source`.

Synopsis:
  (xtr, ytr), (xte, yte) = tfds_source.load_arrays('cifar100', data_dir)   # uint8 in memory
  train_stream, test_stream, n = tfds_source.imagenet_streams(data_dir, image_size=224)
  for batch in train_stream(seed, start_step, global_batch): ...          # grain, per host

Reading needs only the prepared data: `tfds.data_source(name, download=False)`
opens the ArrayRecord files with random access, and grain builds the ImageNet
pipeline on it. Preparing CIFAR / ImageNet from their archives needs
TensorFlow, so it is a separate, one-off step (`pip install kdjax[prepare]`,
then `tfds build ... --file_format=array_record`); `check_prepared` says so
within milliseconds instead of letting tfds retry a download for minutes.
"""

from __future__ import annotations

import concurrent.futures
import json
import math
import os
from typing import Any, Callable, Iterable, Iterator

import numpy as np

class DatasetNotFoundError(FileNotFoundError):
  """A TFDS dataset is not prepared (as ArrayRecord) in the data_dir searched."""


def resolve_data_dir(data_dir: str | None) -> str:
  """data_dir, else $TFDS_DATA_DIR, else TFDS' default (~/tensorflow_datasets)."""
  if data_dir:
    return os.path.expanduser(str(data_dir))
  env = os.environ.get('TFDS_DATA_DIR')
  if env:
    return env
  return os.path.expanduser(os.path.join('~', 'tensorflow_datasets'))


def how_to_prepare(name: str, data_dir: str) -> str:
  """The instructions printed when `name` is missing from `data_dir`."""
  build = (f'  pip install "kdjax[prepare]"   # TensorFlow, needed only to prepare\n'
           f'  tfds build {name} --data_dir {data_dir} --file_format=array_record')
  if name == 'imagenet2012':
    return (f'ImageNet cannot be downloaded automatically. Download ILSVRC2012_img_train.tar and '
            f'ILSVRC2012_img_val.tar from https://image-net.org into a manual_dir '
            f'(default {os.path.join(data_dir, "downloads", "manual")}), then run\n'
            f'{build} --manual_dir <manual_dir>\n'
            f'or point data.data_dir (or $TFDS_DATA_DIR) at a directory that already holds '
            f'imagenet2012/<version>/ prepared as array_record.')
  return (f'Prepare it once (on a machine with network access) with\n{build}\n'
          f'or point data.data_dir (or $TFDS_DATA_DIR) at a directory that already holds '
          f'{name}/<version>/ prepared as array_record.')


def _find_dataset_info(root: str) -> list[str]:
  """dataset_info.json files under root/<version>/ or root/<config>/<version>/."""
  from etils import epath  # a tfds dependency; handles gs:// as well as local paths
  root_path = epath.Path(root)
  if not root_path.exists():
    return []
  found = list(root_path.glob('*/dataset_info.json')) + list(root_path.glob('*/*/dataset_info.json'))
  return sorted(str(p) for p in found)


def check_prepared(name: str, data_dir: str | None) -> str:
  """Fails fast, with instructions, unless `name` is prepared as ArrayRecord.

  Only the file system is consulted (no tfds builder, no network), so a
  missing dataset is reported in milliseconds.

  Returns:
    The resolved data_dir.

  Raises:
    DatasetNotFoundError: no prepared version, or one prepared as tfrecord.
  """
  data_dir = resolve_data_dir(data_dir)
  infos = _find_dataset_info(os.path.join(data_dir, name))
  if not infos:
    raise DatasetNotFoundError(
        f'Dataset {name!r} is not prepared in data_dir {data_dir!r} (searched '
        f'{os.path.join(data_dir, name)}/<version>/dataset_info.json). kdjax reads TFDS '
        f'datasets without TensorFlow and never downloads them while training.\n'
        + how_to_prepare(name, data_dir))
  from etils import epath
  formats = []
  for path in infos:
    try:
      fmt = json.loads(epath.Path(path).read_text()).get('fileFormat', 'tfrecord')
    except (OSError, ValueError):
      fmt = 'unreadable'
    if fmt == 'array_record':
      return data_dir
    formats.append(f'{path}: {fmt}')
  raise DatasetNotFoundError(
      f'Dataset {name!r} in data_dir {data_dir!r} is prepared, but not as array_record '
      f'({"; ".join(formats)}); kdjax needs random access. Rebuild it with\n'
      + how_to_prepare(name, data_dir))


def open_split(name: str, split: str, data_dir: str | None):
  """`tfds.data_source(name, split=split)` after `check_prepared`, failing fast."""
  data_dir = check_prepared(name, data_dir)
  import tensorflow_datasets as tfds
  from tensorflow_datasets.core.download import downloader
  # download=False already forbids downloading; this also stops a stray
  # download attempt from retrying for minutes with no network.
  downloader.MAX_RETRIES = 0
  try:
    return tfds.data_source(name, split=split, data_dir=data_dir, download=False)
  except (AssertionError, FileNotFoundError, tfds.core.registered.DatasetNotFoundError) as e:
    raise DatasetNotFoundError(
        f'Could not open {name}[{split}] in data_dir {data_dir!r}: {e}\n'
        + how_to_prepare(name, data_dir)) from e


def _read_chunk(src, keys: list[int]) -> list[dict[str, Any]]:
  try:
    return list(src.__getitems__(keys))  # one batched ArrayRecord read
  except (AttributeError, TypeError):
    # tfds.testing.mock_data's sources have no working __getitems__.
    return [src[k] for k in keys]


def _as_hwc_uint8(image: np.ndarray) -> np.ndarray:
  image = np.asarray(image, np.uint8)
  return image[..., None] if image.ndim == 2 else image


def read_all(src, *, chunk: int = 2048, num_threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Every record of a data source as (uint8 images [N,H,W,C], int32 labels [N])."""
  n = len(src)
  chunks = [list(range(s, min(s + chunk, n))) for s in range(0, n, chunk)]
  num_threads = num_threads or min(8, os.cpu_count() or 1)
  with concurrent.futures.ThreadPoolExecutor(num_threads) as pool:
    parts = list(pool.map(lambda keys: _read_chunk(src, keys), chunks))
  records = [r for part in parts for r in part]
  if not records:
    raise ValueError('the data source is empty')
  images = np.stack([_as_hwc_uint8(r['image']) for r in records])
  labels = np.asarray([r['label'] for r in records], np.int32)
  return images, labels


def load_arrays(name: str, data_dir: str | None, splits: tuple[str, str] = ('train', 'test'),
                shape: tuple[int, ...] | None = None):
  """((train_images, train_labels), (test_images, test_labels)) of a TFDS set, read whole.

  Args:
    name: the TFDS builder name.
    data_dir: TFDS data_dir (None: $TFDS_DATA_DIR or ~/tensorflow_datasets).
    splits: (train split, test split).
    shape: expected (H, W, C) of every record; checked when given.
  """
  out = []
  for split in splits:
    images, labels = read_all(open_split(name, split, data_dir))
    if shape is not None and images.shape[1:] != tuple(shape):
      raise ValueError(f'{name}[{split}] images have shape {images.shape[1:]}, expected {shape}')
    out.append((images, labels))
  return tuple(out)


# ---------------------------------------------------------------------------
# ImageNet: host-side decoding and augmentation, streamed through grain.


def _to_pil_rgb(image):
  from PIL import Image
  if isinstance(image, (bytes, bytearray)):
    import io
    img = Image.open(io.BytesIO(image))
  else:
    arr = np.asarray(image, np.uint8)
    img = Image.fromarray(arr[..., 0] if arr.ndim == 3 and arr.shape[-1] == 1 else arr)
  return img.convert('RGB') if img.mode != 'RGB' else img


def random_resized_crop_box(rng: np.random.Generator, height: int, width: int,
                            scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
  """(top, left, h, w) of torchvision's RandomResizedCrop (10 tries, then a center crop)."""
  area = height * width
  log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
  for _ in range(10):
    target = area * rng.uniform(*scale)
    aspect = math.exp(rng.uniform(*log_ratio))
    w = int(round(math.sqrt(target * aspect)))
    h = int(round(math.sqrt(target / aspect)))
    if 0 < w <= width and 0 < h <= height:
      top = int(rng.integers(0, height - h + 1))
      left = int(rng.integers(0, width - w + 1))
      return top, left, h, w
  in_ratio = width / height
  if in_ratio < ratio[0]:
    w, h = width, int(round(width / ratio[0]))
  elif in_ratio > ratio[1]:
    h, w = height, int(round(height * ratio[1]))
  else:
    w, h = width, height
  return (height - h) // 2, (width - w) // 2, h, w


def train_preprocess(image, rng: np.random.Generator, size: int) -> np.ndarray:
  """RandomResizedCrop(size) + RandomHorizontalFlip, bilinear, uint8 [size, size, 3]."""
  from PIL import Image
  img = _to_pil_rgb(image)
  top, left, h, w = random_resized_crop_box(rng, img.height, img.width)
  img = img.resize((size, size), Image.BILINEAR, box=(left, top, left + w, top + h))
  out = np.asarray(img, np.uint8)
  if rng.random() < 0.5:
    out = out[:, ::-1]
  return np.ascontiguousarray(out)


def eval_preprocess(image, size: int) -> np.ndarray:
  """Resize the short side to size*256/224 (256 for 224), center crop size x size."""
  from PIL import Image
  img = _to_pil_rgb(image)
  short = int(round(size * 256 / 224))
  scale = short / min(img.width, img.height)
  new_w, new_h = max(size, int(round(img.width * scale))), max(size, int(round(img.height * scale)))
  img = img.resize((new_w, new_h), Image.BILINEAR)
  left, top = (new_w - size) // 2, (new_h - size) // 2
  return np.asarray(img.crop((left, top, left + size, top + size)), np.uint8)


def _host_batch(global_batch: int) -> tuple[int, int, int]:
  import jax
  count, index = jax.process_count(), jax.process_index()
  if global_batch % count:
    raise ValueError(f'global batch {global_batch} is not divisible by {count} hosts')
  return global_batch // count, index, count


def make_train_stream(src, *, image_size: int, num_threads: int = 16, prefetch: int = 256
                      ) -> Callable[[int, int, int], Iterator[dict]]:
  """`train_stream(seed, start_step, global_batch)` over a random-access source.

  Pipeline: source (+ record index) -> seed -> global shuffle -> repeat (each
  epoch reshuffled) -> this host's slice [process_index::process_count] ->
  seeded random crop + flip -> batch(global_batch // process_count,
  drop_remainder) -> [start_step:]. Every stage is a grain MapDataset, so
  batch k is a pure function of (seed, k): resuming at `start_step` yields
  exactly the batches an uninterrupted run would have, with no iterator state
  to checkpoint. Batches run across epoch boundaries (the stream is one long
  sequence of epochs); hosts never share a record within an epoch.
  """
  import grain

  def train_stream(seed: int, start_step: int, global_batch: int) -> Iterator[dict]:
    per_host, index, count = _host_batch(global_batch)

    n = len(src)

    def attach_index(i, record):
      # MapDataset indices run past len(src) after repeat(); records wrap around.
      return {'image': record['image'], 'label': record['label'], 'index': i % n}

    def augment(record, rng):
      return {'image': train_preprocess(record['image'], rng, image_size),
              'label': np.int32(record['label']), 'index': np.int32(record['index'])}

    ds = grain.MapDataset.source(src).map_with_index(attach_index).seed(int(seed))
    ds = ds.shuffle().repeat()[index::count].random_map(augment)
    ds = ds.batch(per_host, drop_remainder=True)[int(start_step):]
    return iter(ds.to_iter_dataset(grain.ReadOptions(num_threads=num_threads,
                                                      prefetch_buffer_size=prefetch)))
  return train_stream


def make_test_stream(src, *, image_size: int, num_threads: int = 16, prefetch: int = 256
                     ) -> Callable[[int], Iterable[dict]]:
  """`test_stream(global_batch)`: every record once, in order, split over hosts.

  Host h gets records h, h + P, h + 2P, ... Every host yields the same number
  of batches (ceil(ceil(N / P) / B)); slots past the end are zero images with
  `mask` False, so the padded last batch can be dropped from the metrics.
  """
  import grain

  def test_stream(global_batch: int) -> Iterable[dict]:
    per_host, index, count = _host_batch(global_batch)
    n = len(src)
    host_idx = np.arange(index, n, count)
    num_batches = math.ceil(math.ceil(n / count) / per_host)
    blank = np.zeros((image_size, image_size, 3), np.uint8)

    def load(j):
      if j < len(host_idx):
        i = int(host_idx[j])
        record = src[i]
        return {'image': eval_preprocess(record['image'], image_size),
                'label': np.int32(record['label']), 'index': np.int32(i), 'mask': np.bool_(True)}
      return {'image': blank, 'label': np.int32(0), 'index': np.int32(-1), 'mask': np.bool_(False)}

    ds = grain.MapDataset.range(num_batches * per_host).map(load).batch(per_host)
    return ds.to_iter_dataset(grain.ReadOptions(num_threads=num_threads,
                                                prefetch_buffer_size=prefetch))
  return test_stream


def imagenet_streams(data_dir: str | None, image_size: int = 224, *, name: str = 'imagenet2012',
                     splits: tuple[str, str] = ('train', 'validation'), **kw):
  """(train_stream, test_stream, num_train) for a streamed TFDS dataset (ImageNet)."""
  train_src = open_split(name, splits[0], data_dir)
  test_src = open_split(name, splits[1], data_dir)
  return (make_train_stream(train_src, image_size=image_size, **kw),
          make_test_stream(test_src, image_size=image_size, **kw), len(train_src))
