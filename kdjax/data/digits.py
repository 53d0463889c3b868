"""The embedded digits set: scikit-learn's 1797 handwritten 8x8 digits, offline.

Synopsis:
  (x_train, y_train), (x_test, y_test) = digits.arrays()   # uint8 [N, 8, 8, 1], int32 [N]

Pixels: `load_digits()` gives 0..16; they become uint8 via round(v * 255 / 16).
Split (fixed, never changes): `sklearn.model_selection.train_test_split` of
the 1797 indices with test_size=360, random_state=0, stratify=labels, giving
1437 train / 360 test with every class in both (35-37 test images per class).
MEAN / STD are the statistics of x/255 over the 1437 training images
(0.305434 / 0.375957), rounded to 4 decimals; tests check they still match.
"""

from __future__ import annotations

import numpy as np

NAME = 'digits'
NUM_CLASSES = 10
IMAGE_SHAPE = (8, 8, 1)
NUM_TRAIN = 1437
NUM_TEST = 360
SPLIT_SEED = 0
MEAN = (0.3054,)
STD = (0.3760,)


def arrays() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
  """Returns ((train_images, train_labels), (test_images, test_labels)).

  Images are uint8 [N, 8, 8, 1] in 0..255 and labels int32 [N]; the split is
  the fixed stratified one described in the module docstring.
  """
  # Imported here: scikit-learn takes ~1 s to import and only digits needs it.
  from sklearn.datasets import load_digits
  from sklearn.model_selection import train_test_split

  raw = load_digits()
  images = np.round(raw.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
  labels = raw.target.astype(np.int32)
  train_idx, test_idx = train_test_split(
      np.arange(len(labels)), test_size=NUM_TEST, random_state=SPLIT_SEED, stratify=labels)
  return (images[train_idx], labels[train_idx]), (images[test_idx], labels[test_idx])
