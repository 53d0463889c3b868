"""The dataset registry: one `DatasetSpec` per name; a new TFDS dataset is one entry.

Synopsis:
  spec = registry.get('cifar100')     # DatasetSpec(name, loader, num_classes, mean, std, ...)
  registry.names()                    # known dataset names
  registry.register(DatasetSpec('svhn_cropped', 'tfds', 10, MEAN, STD, image_shape=(32, 32, 3)))

Loaders (implemented in `kdjax.data`): 'embedded' (digits, offline), 'tfds'
(a prepared ArrayRecord TFDS dataset, read whole into memory), 'tfds_stream'
(a TFDS dataset streamed through grain: ImageNet), 'folder' and 'fer2013'
(local files). This module imports nothing heavy: tensorflow_datasets and
grain are imported by the loaders, only when data is read.

Normalisation constants (applied to x / 255):
  CIFAR-100: RepDistiller's constants. CIFAR-10: the Zagoruyko attention-transfer
  code that Sarfraz et al.'s recipe follows, mean [125.3, 123.0, 113.9]/255 and std
  [63.0, 62.1, 66.7]/255 = (0.4914, 0.4824, 0.4467) / (0.2471, 0.2435, 0.2616),
  within 3e-4 of the exact train-set statistics (0.4914, 0.4822, 0.4465) /
  (0.2470, 0.2435, 0.2616).
  STL-10: statistics of its 5000 labelled training images at 96x96 (kept when
  downsampled to 32x32 for CRD's linear probe: area-weighted resampling keeps
  the mean, the std drops slightly).
  ImageNet: the torchvision constants every ImageNet KD code base uses.
  folder / fer2013: computed from the loaded train split (mean/std None here).
"""

from __future__ import annotations

import dataclasses
import difflib

from kdjax.data import digits   # constants only (sklearn is imported when the data is read)

CIFAR10_MEAN = (125.3 / 255, 123.0 / 255, 113.9 / 255)
CIFAR10_STD = (63.0 / 255, 62.1 / 255, 66.7 / 255)
CIFAR100_MEAN = (0.5071, 0.4867, 0.4408)
CIFAR100_STD = (0.2675, 0.2565, 0.2761)
STL10_MEAN = (0.4467, 0.4398, 0.4066)
STL10_STD = (0.2603, 0.2566, 0.2713)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

LOADERS = ('embedded', 'tfds', 'tfds_stream', 'folder', 'fer2013')


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """What kdjax needs to know about a dataset before reading it.

  Attributes:
    name: the `data.name` value.
    loader: one of LOADERS.
    num_classes: classes, or None when the data decides (folder).
    mean, std: per-channel normalisation of x / 255, or None = computed from the
      train split.
    splits: (train split, test split) names in the source.
    image_shape: stored (H, W, C) of every record, checked on load; None when
      the images are resized by `data.image_size` (streams, local files).
    resizable: `data.image_size` resamples the stored images (bilinear, as
      torchvision's Resize on PIL images) when it differs from image_shape.
    default_image_size: the size streamed / local datasets use without
      `data.image_size`.
    tfds_name: the TFDS builder name (default: name).
  """
  name: str
  loader: str
  num_classes: int | None
  mean: tuple[float, ...] | None
  std: tuple[float, ...] | None
  splits: tuple[str, str] = ('train', 'test')
  image_shape: tuple[int, int, int] | None = None
  resizable: bool = False
  default_image_size: int | None = None
  tfds_name: str | None = None

  def __post_init__(self):
    if self.loader not in LOADERS:
      raise ValueError(f'DatasetSpec {self.name!r}: loader must be one of {LOADERS}, '
                       f'got {self.loader!r}.')
    if (self.mean is None) != (self.std is None):
      raise ValueError(f'DatasetSpec {self.name!r}: give both mean and std, or neither.')
    if self.loader == 'tfds' and self.image_shape is None:
      raise ValueError(f'DatasetSpec {self.name!r}: an in-memory TFDS dataset needs image_shape.')

  @property
  def source_name(self) -> str:
    return self.tfds_name or self.name


_SPECS: dict[str, DatasetSpec] = {}


def register(spec: DatasetSpec) -> DatasetSpec:
  """Adds a dataset; raises if the name is taken."""
  if spec.name in _SPECS:
    raise ValueError(f'dataset {spec.name!r} is already registered.')
  _SPECS[spec.name] = spec
  return spec


for _spec in (
    DatasetSpec('digits', 'embedded', digits.NUM_CLASSES, digits.MEAN, digits.STD,
                image_shape=digits.IMAGE_SHAPE),
    DatasetSpec('cifar10', 'tfds', 10, CIFAR10_MEAN, CIFAR10_STD, image_shape=(32, 32, 3),
                resizable=True),
    DatasetSpec('cifar100', 'tfds', 100, CIFAR100_MEAN, CIFAR100_STD, image_shape=(32, 32, 3),
                resizable=True),
    DatasetSpec('stl10', 'tfds', 10, STL10_MEAN, STL10_STD, image_shape=(96, 96, 3),
                resizable=True),
    DatasetSpec('imagenet2012', 'tfds_stream', 1000, IMAGENET_MEAN, IMAGENET_STD,
                splits=('train', 'validation'), default_image_size=224),
    DatasetSpec('folder', 'folder', None, None, None, default_image_size=32),
    DatasetSpec('fer2013', 'fer2013', 7, None, None, default_image_size=32),
):
  register(_spec)


def names() -> tuple[str, ...]:
  return tuple(_SPECS)


def get(name: str) -> DatasetSpec:
  """The spec of `name`; an unknown name raises with the known ones and a did-you-mean."""
  if name in _SPECS:
    return _SPECS[name]
  close = difflib.get_close_matches(str(name), names(), n=1)
  hint = f' Did you mean {close[0]!r}?' if close else ''
  raise ValueError(f'Unknown dataset {name!r}. Known datasets: {", ".join(names())}.{hint}')
