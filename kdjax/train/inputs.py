"""Batch sources for the train step: on-device sampling or host-streamed batches.

In-memory datasets (digits, CIFAR) live on the device as uint8; each step
draws its indices from a per-epoch permutation keyed by (seed, epoch) and
augments with a key derived from (seed, step), all inside the compiled step,
so the host never touches an image and the stream is exactly reproducible.
Streamed datasets (ImageNet) arrive as host batches already augmented by grain.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from kdjax.data import augment
from kdjax.train.step import STREAM_EPOCH


def epoch_key(seed: int, epoch):
  return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), STREAM_EPOCH), epoch)


def in_memory_batch_fn(dataset, data_cfg, *, seed: int, batch_size: int, steps_per_epoch: int):
  """`batch_fn(data, step, key)` for data = {'image': uint8 [N,H,W,C], 'label': int32 [N]}.

  `seed` may be a traced int32 scalar (seeds vmapped by multiseed.py).
  With `data_cfg.drop_remainder=False` and N % B != 0 the epoch has ceil(N / B)
  steps and each batch carries `mask` (bool [B], False on the padding rows of
  the last one, see `augment.gather_batch_masked`); when B divides N the
  batches are exactly those of drop_remainder=True, without a mask.
  """
  mean = jnp.asarray(dataset.mean, jnp.float32)
  std = jnp.asarray(dataset.std, jnp.float32)

  masked = not data_cfg.get('drop_remainder', True) and dataset.num_train % batch_size != 0

  def batch_fn(data, step, key):
    epoch, step_in_epoch = step // steps_per_epoch, step % steps_per_epoch
    extra = {}
    if masked:
      images, labels, index, extra['mask'] = augment.gather_batch_masked(
          data['image'], data['label'], epoch_key(seed, epoch), step_in_epoch, batch_size)
    else:
      images, labels, index = augment.gather_batch(
          data['image'], data['label'], epoch_key(seed, epoch), step_in_epoch, batch_size)
    if data_cfg.crop_padding or data_cfg.flip:
      # Crop and flip the raw pixels so the padding is black, as torchvision's
      # RandomCrop on the PIL image does, then normalise.
      images = augment.random_crop_flip(key, images, pad=data_cfg.crop_padding, flip=data_cfg.flip,
                                        pad_mode=data_cfg.pad_mode)
    x = augment.normalize(images, mean, std)
    return {'image': x, 'label': labels, 'index': index, **extra}
  return batch_fn


def streamed_batch_fn(dataset):
  """`batch_fn(batch, step, key)` for host batches {'image' uint8, 'label', 'index'}."""
  mean = jnp.asarray(dataset.mean, jnp.float32)
  std = jnp.asarray(dataset.std, jnp.float32)

  def batch_fn(batch, step, key):
    del step, key
    return {'image': augment.normalize(batch['image'], mean, std), 'label': batch['label'],
            'index': batch['index']}
  return batch_fn


def eval_batches(images: np.ndarray, labels: np.ndarray, batch_size: int):
  """Yields (images, labels, n_valid) with the last batch zero-padded to full size."""
  n = len(images)
  for start in range(0, n, batch_size):
    x, y = images[start:start + batch_size], labels[start:start + batch_size]
    valid = len(x)
    if valid < batch_size:
      x = np.concatenate([x, np.zeros((batch_size - valid,) + x.shape[1:], x.dtype)])
      y = np.concatenate([y, np.zeros((batch_size - valid,), y.dtype)])
    yield x, y, valid


def normalize_host(images: np.ndarray, dataset) -> np.ndarray:
  mean = np.asarray(dataset.mean, np.float32)
  std = np.asarray(dataset.std, np.float32)
  return ((images.astype(np.float32) / 255.0) - mean) / std


# Multi-host: every process holds the global arrays' rows of its own devices.
# With one process these are plain device_puts.

def process_rows(sharding, global_rows: int) -> slice:
  """The rows [start, stop) of a batch-sharded global array that this process's devices hold.

  They are contiguous when the mesh lists each process's devices together
  (jax.devices() order, which `setup.make_mesh` uses); anything else is an error.
  """
  idx = sharding.addressable_devices_indices_map((global_rows,))
  starts = sorted({(s[0].start or 0, global_rows if s[0].stop is None else s[0].stop)
                   for s in idx.values()})
  for (_, stop), (start, _) in zip(starts[:-1], starts[1:]):
    if stop != start:
      raise ValueError(f'process {jax.process_index()} holds non-contiguous batch rows {starts}: '
                       f'build the mesh from jax.devices() in order.')
  return slice(starts[0][0], starts[-1][1])


def host_batch_to_global(local: dict, sharding) -> dict:
  """Global arrays from this process's rows of a batch (per-host streams: grain, ...).

  Each process passes its own `global_batch // process_count` rows; the result
  has the global batch on the mesh, process p's rows on p's devices.
  """
  def put(x):
    x = np.asarray(x)
    return jax.make_array_from_process_local_data(sharding, x, (x.shape[0] * jax.process_count(),)
                                                   + x.shape[1:])
  return jax.tree.map(put, local)


def global_batch_to_devices(batch, sharding):
  """A batch that every process holds in full (in-memory eval) onto the batch-sharded mesh."""
  if jax.process_count() == 1:
    return jax.device_put(batch, sharding)

  def put(x):
    x = np.asarray(x)
    rows = process_rows(sharding, x.shape[0])
    return jax.make_array_from_process_local_data(sharding, x[rows], x.shape)
  return jax.tree.map(put, batch)


def gather_host_rows(local: np.ndarray) -> np.ndarray:
  """Concatenates every process's rows in process order (labels and masks of per-host batches)."""
  if jax.process_count() == 1:
    return np.asarray(local)
  from jax.experimental import multihost_utils
  return np.asarray(multihost_utils.process_allgather(np.asarray(local), tiled=True))


def replicate(tree, sharding):
  """`tree` (the same on every process) onto a replicated global sharding.

  Across processes JAX cannot move an array already committed to one local
  device (a loaded teacher) onto the global mesh, so it goes through the host.
  """
  if jax.process_count() > 1:
    tree = jax.device_get(tree)
  return jax.device_put(tree, sharding)
