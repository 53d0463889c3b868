"""On-device, keyed augmentation and batch sampling for in-memory datasets.

Synopsis:
  images, labels, idx = gather_batch(data_images, data_labels, epoch_key, step_in_epoch, 128)
  images, labels, idx, mask = gather_batch_masked(...)   # keeps the last partial batch
  steps_per_epoch(50000, 64, drop_remainder=False)        # 782 (781 when dropping)
  x = random_crop_flip(key, images, pad=4, flip=True, pad_mode='reflect')  # float32, 0..255
  x = normalize(x, mean, std)                                              # (x/255 - mean)/std

Every function is pure, shape-static and jit-able; step numbers may be traced.
Crops use a vmapped `lax.dynamic_slice`, so there is no Python loop over the
batch and one compilation serves every step.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp


def random_crop_flip(rng: jax.Array, images: jax.Array, *, pad: int = 4, flip: bool = True,
                     pad_mode: str = 'constant') -> jax.Array:
  """Per-sample random crop of the padded image plus per-sample horizontal flip.

  This is torchvision's `RandomCrop(H, padding=pad)` (zero padding, the RD /
  CRD recipe) or, with `pad_mode='reflect'`, the `Pad(4, 'reflect')` +
  `RandomCrop` of the Zagoruyko recipe that Sarfraz et al. follow, followed by
  `RandomHorizontalFlip(0.5)`. Applied to raw pixels (uint8 or float), so
  constant padding is black, as on the PIL image.

  Args:
    rng: a PRNG key.
    images: [B, H, W, C], uint8 or float.
    pad: padding on each side; 0 disables the crop.
    flip: whether to flip each sample left-right with probability 0.5.
    pad_mode: 'constant' (zeros) or 'reflect' (mirror without the edge pixel,
      as torch's 'reflect').

  Returns:
    float32 [B, H, W, C] in the input's value range.
  """
  if images.ndim != 4:
    raise ValueError(f'images must be [B, H, W, C], got shape {images.shape}')
  if pad_mode not in ('constant', 'reflect'):
    raise ValueError(f"pad_mode must be 'constant' or 'reflect', got {pad_mode!r}")
  x = images.astype(jnp.float32)
  b, h, w, c = x.shape
  crop_key, flip_key = jax.random.split(rng)
  if pad > 0:
    x = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode=pad_mode)
    offsets = jax.random.randint(crop_key, (b, 2), 0, 2 * pad + 1)

    def crop(img, off):
      return jax.lax.dynamic_slice(img, (off[0], off[1], 0), (h, w, c))

    x = jax.vmap(crop)(x, offsets)
  if flip:
    do_flip = jax.random.bernoulli(flip_key, 0.5, (b,))
    x = jnp.where(do_flip[:, None, None, None], x[:, :, ::-1, :], x)
  return x


def normalize(images: jax.Array, mean: Sequence[float] | jax.Array,
              std: Sequence[float] | jax.Array) -> jax.Array:
  """(x / 255 - mean) / std per channel, as float32. `images` holds 0..255 values."""
  mean = jnp.asarray(mean, jnp.float32)
  std = jnp.asarray(std, jnp.float32)
  return (images.astype(jnp.float32) / 255.0 - mean) / std


def gather_batch(images: jax.Array, labels: jax.Array, rng_epoch_perm_key: jax.Array,
                 step_in_epoch, batch_size: int) -> tuple[jax.Array, jax.Array, jax.Array]:
  """The `step_in_epoch`-th batch of a per-epoch permutation (drop remainder).

  Step s of an epoch takes `perm[s*B:(s+1)*B]` of `perm =
  jax.random.permutation(key, N)`, so the N // B steps of one epoch visit
  each kept index exactly once (the last N % B of the permutation are
  dropped). Recomputing the permutation each step costs O(N log N) on device,
  negligible next to a forward pass for CIFAR-sized N, and keeps the step
  stateless: resuming at any step needs only (key, step).

  Args:
    images: [N, ...] (uint8 on device).
    labels: [N].
    rng_epoch_perm_key: a key that identifies the epoch.
    step_in_epoch: int or traced int scalar in [0, N // batch_size).
    batch_size: B (static).

  Returns:
    (images[idx], labels[idx], idx) with idx int32 [B].
  """
  n = images.shape[0]
  if batch_size > n:
    raise ValueError(f'batch_size {batch_size} exceeds the dataset size {n}')
  perm = jax.random.permutation(rng_epoch_perm_key, n)
  start = jnp.asarray(step_in_epoch, jnp.int32) * batch_size
  idx = jax.lax.dynamic_slice_in_dim(perm, start, batch_size).astype(jnp.int32)
  return jnp.take(images, idx, axis=0), jnp.take(labels, idx, axis=0), idx


def steps_per_epoch(num_examples: int, batch_size: int, drop_remainder: bool = True) -> int:
  """N // B when dropping the last partial batch, else ceil(N / B) (RepDistiller: 782 at 50000 / 64)."""
  if batch_size < 1 or num_examples < 1:
    raise ValueError(f'need num_examples >= 1 and batch_size >= 1, got {num_examples}, {batch_size}.')
  if drop_remainder:
    if batch_size > num_examples:
      raise ValueError(f'batch size {batch_size} exceeds the training set ({num_examples} examples): '
                       'lower optim.batch_size, or set data.drop_remainder=False to train on '
                       'one masked partial batch per epoch.')
    return num_examples // batch_size
  return -(-num_examples // batch_size)


def gather_batch_masked(images: jax.Array, labels: jax.Array, rng_epoch_perm_key: jax.Array,
                        step_in_epoch, batch_size: int
                        ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """`gather_batch` keeping the last partial batch, at a fixed shape (one compile).

  The epoch's permutation `perm = jax.random.permutation(key, N)` (the same one
  `gather_batch` uses) is extended to ceil(N / B) * B entries by repeating its
  first entries, and step s takes `[s*B, (s+1)*B)` of it. mask[j] is True for
  the positions s*B + j < N, so the valid entries of the ceil(N / B) steps visit
  every index exactly once; the first N // B batches equal `gather_batch`'s, with
  an all-True mask. The padding rows are real images (never zeros), so they are
  harmless in the forward pass, but they must be excluded by the step (see
  README: loss and metrics weighted by mask; no memory-bank writes for them).

  Args:
    images: [N, ...] (uint8 on device).
    labels: [N].
    rng_epoch_perm_key: a key that identifies the epoch.
    step_in_epoch: int or traced int scalar in [0, ceil(N / batch_size)).
    batch_size: B (static).

  Returns:
    (images[idx], labels[idx], idx, mask) with idx int32 [B] and mask bool [B].
  """
  n = images.shape[0]
  steps = -(-n // batch_size)
  perm = jax.random.permutation(rng_epoch_perm_key, n)
  pad = steps * batch_size - n
  if pad:
    perm = jnp.concatenate([perm, jnp.resize(perm, (pad,))])
  start = jnp.asarray(step_in_epoch, jnp.int32) * batch_size
  idx = jax.lax.dynamic_slice_in_dim(perm, start, batch_size).astype(jnp.int32)
  mask = start + jnp.arange(batch_size, dtype=jnp.int32) < n
  return jnp.take(images, idx, axis=0), jnp.take(labels, idx, axis=0), idx, mask

