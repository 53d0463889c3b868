"""Linear-probe transfer: a linear classifier on a frozen network's penultimate features.

Synopsis:
  res = linear_probe(f_train, y_train, f_test, y_test, num_classes)   # {'top1', ...}
  f = penultimate(net, x01)                                            # [N, D] 'pooled'
  kdjax analyze probe STUDENT_DIR --probe_data stl10 [--probe_data_dir DIR]

SRRL (Yang et al. 2021) Table 4, following CRD (Tian et al. 2020, Sec. 4.2
"Transferability of representations"): freeze the student trained on
CIFAR-100, train a linear classifier on its penultimate features (the pooled
vector before the logits) of another dataset, and report top-1 on that
dataset's test split.

Splits, as CRD describes them: STL-10's 5,000 labelled 'train' images train the
probe and its 8,000 'test' images test it (the 100,000-image 'unlabelled' split
is not used); all images downsampled to 32x32 (`kdjax.data` with image_size 32:
PIL bilinear with antialiasing). CIFAR-10: 'train' (50,000) / 'test' (10,000).
The images go through the frozen network exactly as its own test images do
(x / 255, then the training set's mean / std inside `Net`), no augmentation.

The classifier: CRD does not publish its probe's optimiser or schedule (its
code release has no probe; the question is open on the RepDistiller tracker),
so kdjax fits multinomial logistic regression, the convex problem a linear
probe is, on features standardised with the training split's per-dimension
mean and std: AdamW (lr 1e-2, weight decay 1e-4), `steps` steps of 256 examples
drawn with replacement. The optimiser changes how fast it converges, not the
optimum it approaches.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax


def penultimate(net, x01, batch_size: int = 500, feature: str = 'pooled') -> np.ndarray:
  """The frozen network's `feature` (default the pooled penultimate vector) for every image."""
  out = [np.asarray(net(x01[i:i + batch_size])[1][feature]) for i in range(0, len(x01), batch_size)]
  return np.concatenate(out).reshape(len(x01), -1)


def to_input(images_uint8, size: int) -> np.ndarray:
  """uint8 [N, H, W, C] -> float32 [N, size, size, C] in [0, 1] (`resize` if H, W differ)."""
  return resize(np.asarray(images_uint8, np.float32) / 255.0, size)


def resize(x01, size: int):
  """Area-style downsampling (jax.image.resize, 'linear' with antialiasing) to size x size."""
  x01 = jnp.asarray(x01)
  if x01.shape[1:3] == (size, size):
    return np.asarray(x01)
  return np.asarray(jax.image.resize(x01, (x01.shape[0], size, size, x01.shape[3]), 'linear',
                                     antialias=True))


@functools.partial(jax.jit, static_argnames=('num_classes', 'steps', 'batch_size'))
def _train(f, y, key, *, num_classes, steps, batch_size, lr, weight_decay):
  d = f.shape[1]
  params = {'w': jnp.zeros((d, num_classes)), 'b': jnp.zeros((num_classes,))}
  tx = optax.adamw(lr, weight_decay=weight_decay)

  def loss(p, fb, yb):
    return optax.softmax_cross_entropy_with_integer_labels(fb @ p['w'] + p['b'], yb).mean()

  def step(carry, k):
    p, s = carry
    idx = jax.random.randint(k, (batch_size,), 0, f.shape[0])
    g = jax.grad(loss)(p, f[idx], y[idx])
    u, s = tx.update(g, s, p)
    return (optax.apply_updates(p, u), s), None

  (p, _), _ = jax.lax.scan(step, (params, tx.init(params)), jax.random.split(key, steps))
  return p, loss(p, f, y)


def linear_probe(f_train, y_train, f_test, y_test, num_classes: int, *, steps: int = 2000,
                 batch_size: int = 256, lr: float = 1e-2, weight_decay: float = 1e-4,
                 seed: int = 0) -> dict:
  """Top-1 of a linear softmax classifier trained on frozen features (CRD's linear evaluation).

  Returns:
    {'top1' (test), 'train_top1', 'train_loss'}.
  """
  f_train = np.asarray(f_train, np.float32).reshape(len(f_train), -1)
  f_test = np.asarray(f_test, np.float32).reshape(len(f_test), -1)
  if f_train.shape[1] != f_test.shape[1]:
    raise ValueError(f'train features have {f_train.shape[1]} dims, test {f_test.shape[1]}.')
  mu, sd = f_train.mean(0), f_train.std(0) + 1e-6
  f_train, f_test = (f_train - mu) / sd, (f_test - mu) / sd
  y_train = np.asarray(y_train, np.int32)
  p, train_loss = _train(jnp.asarray(f_train), jnp.asarray(y_train), jax.random.key(seed),
                         num_classes=int(num_classes), steps=int(steps),
                         batch_size=int(min(batch_size, len(f_train))), lr=float(lr),
                         weight_decay=float(weight_decay))
  pred = lambda f: np.asarray(jnp.asarray(f) @ p['w'] + p['b']).argmax(-1)
  return {'top1': float((pred(f_test) == np.asarray(y_test)).mean()),
          'train_top1': float((pred(f_train) == y_train).mean()), 'train_loss': float(train_loss)}
