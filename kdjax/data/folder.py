"""Local datasets: a labelled image folder, and the FER-2013 CSV.

Synopsis:
  (xtr, ytr), (xte, yte), classes = folder.load_folder('/data/pets', image_size=32)
  (xtr, ytr), (xte, yte) = folder.load_fer2013('/data/fer2013.csv', image_size=32)

Folder layout: <path>/train/<class>/*.{png,jpg,jpeg,bmp,gif,webp} and
<path>/test/<class>/*. Class ids are the sorted class-directory names of
train/; a test class missing from train/ is an error. Images are converted to
RGB and resized (bilinear, aspect ratio not kept) to image_size x image_size.

FER-2013 (Goodfellow et al. 2013, the Kaggle `fer2013.csv`): columns
`emotion` (0..6), `pixels` (2304 space-separated 0..255 values of a 48x48
grayscale face) and `Usage`. Rows with Usage `Training` (28,709) are the
train split; `PublicTest` (3,589) is the test split by default, as in
Self-Guidance's FER experiments and most FER-2013 papers, which report the
public test set; pass test_usage='PrivateTest' for the other one. Faces stay
grayscale (C = 1) and are resized to 32x32 by default.

Both loaders return uint8 [N, H, W, C] and int32 [N]; `kdjax.data.load`
computes the per-channel mean/std from the train split.
"""

from __future__ import annotations

import csv
import os

import numpy as np

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.gif', '.webp')
FER2013_CLASSES = ('angry', 'disgust', 'fear', 'happy', 'sad', 'surprise', 'neutral')


def _resize(img, image_size: int) -> np.ndarray:
  from PIL import Image
  if img.size != (image_size, image_size):
    img = img.resize((image_size, image_size), Image.BILINEAR)
  arr = np.asarray(img, np.uint8)
  return arr[..., None] if arr.ndim == 2 else arr


def _class_dirs(split_dir: str) -> list[str]:
  return sorted(d for d in os.listdir(split_dir) if os.path.isdir(os.path.join(split_dir, d)))


def _read_split(split_dir: str, class_to_id: dict[str, int], image_size: int):
  from PIL import Image
  images, labels = [], []
  for name in _class_dirs(split_dir):
    if name not in class_to_id:
      raise ValueError(f'class {name!r} in {split_dir} has no directory in the train split '
                       f'(train classes: {sorted(class_to_id)})')
    class_dir = os.path.join(split_dir, name)
    for file in sorted(os.listdir(class_dir)):
      if not file.lower().endswith(IMAGE_EXTENSIONS):
        continue
      with Image.open(os.path.join(class_dir, file)) as img:
        images.append(_resize(img.convert('RGB'), image_size))
      labels.append(class_to_id[name])
  if not images:
    raise ValueError(f'no images ({", ".join(IMAGE_EXTENSIONS)}) under {split_dir}/<class>/')
  return np.stack(images), np.asarray(labels, np.int32)


def load_folder(path: str, image_size: int = 32):
  """((train_images, train_labels), (test_images, test_labels), class_names)."""
  path = os.path.expanduser(str(path))
  for split in ('train', 'test'):
    if not os.path.isdir(os.path.join(path, split)):
      raise FileNotFoundError(
          f'folder dataset: {os.path.join(path, split)!r} does not exist; expected '
          f'{path}/train/<class>/*.png|jpg and {path}/test/<class>/*')
  classes = _class_dirs(os.path.join(path, 'train'))
  if len(classes) < 2:
    raise ValueError(f'folder dataset: need at least 2 class directories in {path}/train, got {classes}')
  class_to_id = {c: i for i, c in enumerate(classes)}
  train = _read_split(os.path.join(path, 'train'), class_to_id, image_size)
  test = _read_split(os.path.join(path, 'test'), class_to_id, image_size)
  return train, test, classes


def load_fer2013(path: str, image_size: int = 32, test_usage: str = 'PublicTest'):
  """((train_images, train_labels), (test_images, test_labels)) from fer2013.csv."""
  from PIL import Image
  path = os.path.expanduser(str(path))
  if os.path.isdir(path):
    path = os.path.join(path, 'fer2013.csv')
  if not os.path.isfile(path):
    raise FileNotFoundError(
        f'fer2013: {path!r} not found. Download fer2013.csv (Kaggle "Challenges in '
        f'Representation Learning: Facial Expression Recognition Challenge") and set data.path.')
  if test_usage not in ('PublicTest', 'PrivateTest'):
    raise ValueError(f"test_usage must be 'PublicTest' or 'PrivateTest', got {test_usage!r}")
  splits = {'Training': ([], []), test_usage: ([], [])}
  with open(path, newline='') as f:
    reader = csv.DictReader(f)
    missing = {'emotion', 'pixels', 'Usage'} - set(reader.fieldnames or ())
    if missing:
      raise ValueError(f'fer2013: {path} lacks columns {sorted(missing)} (has {reader.fieldnames})')
    for row in reader:
      usage = row['Usage'].strip()
      if usage not in splits:
        continue
      pixels = np.array(row['pixels'].split(), np.uint8)
      if pixels.size != 48 * 48:
        raise ValueError(f'fer2013: a row has {pixels.size} pixels, expected 2304 (48x48)')
      face = Image.fromarray(pixels.reshape(48, 48))  # uint8 2-D -> mode 'L'
      splits[usage][0].append(_resize(face, image_size))
      splits[usage][1].append(int(row['emotion']))
  out = []
  for usage in ('Training', test_usage):
    images, labels = splits[usage]
    if not images:
      raise ValueError(f'fer2013: no rows with Usage == {usage!r} in {path}')
    out.append((np.stack(images), np.asarray(labels, np.int32)))
  return tuple(out)
