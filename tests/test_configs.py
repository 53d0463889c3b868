"""Config files resolve: every method, feature and hyper-parameter they name exists.

Building a run needs only shapes (no data, no compile), so this checks a
sample of configs: the first file of each (folder, method) group, plus every
FSP file of the RD table, whose cross-channel pairs must be rejected with the
reason (RepDistiller's "N/A" cells).
"""

import collections
import glob
import os
import re

import jax
import jax.numpy as jnp
import pytest

from kdjax import bench, config as config_lib, models
from kdjax.train import setup as setup_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _groups():
  groups = collections.OrderedDict()
  for path in sorted(glob.glob(os.path.join(ROOT, 'configs', '**', '*.py'), recursive=True)):
    rel = os.path.relpath(path, ROOT)
    folder, name = os.path.split(rel)
    method = re.split(r'_(?=resnet|wrn|vgg|mobilenet|shufflenet|peers|ensemble)', name)[0]
    groups.setdefault((folder, method), rel)
  return list(groups.values())


def build(rel):
  cfg = config_lib.load_file(os.path.join(ROOT, rel))
  ds = bench.synthetic_dataset(cfg, pool=2 * cfg.optim.batch_size)
  teacher = None
  if cfg.teacher.arch:
    m = models.create(cfg.teacher.arch, ds.num_classes)
    shapes = jax.eval_shape(lambda: m.init(jax.random.key(0), jnp.zeros((2,) + ds.image_shape),
                                           train=False))
    teacher = setup_lib.Teacher(m, dict(shapes), cfg.teacher.arch, '', '')
  with cfg.unlocked():
    cfg.teacher.checkpoint = ''
  return setup_lib.build(cfg, dataset=ds, teacher=teacher)


@pytest.mark.parametrize('rel', _groups())
def test_config_resolves(rel):
  if os.path.basename(rel).startswith('fsp_'):
    pytest.skip('FSP files are checked below')
  s = build(rel)
  assert s.stage_bounds[-1][1] > 0


FSP_NA = {'fsp_resnet32x4_shufflenetv1', 'fsp_resnet32x4_shufflenetv2', 'fsp_resnet50_cifar_mobilenetv2',
          'fsp_resnet50_cifar_vgg8', 'fsp_vgg13_mobilenetv2', 'fsp_wrn_40_2_shufflenetv1',
          'fsp_wrn_40_2_wrn_40_1'}


@pytest.mark.parametrize('rel', sorted(os.path.relpath(p, ROOT) for p in
                                       glob.glob(os.path.join(ROOT, 'configs/cifar100/fsp_*.py'))))
def test_rd_fsp_cells(rel):
  name = os.path.basename(rel)[:-3]
  if name in FSP_NA:
    with pytest.raises(ValueError, match='channel counts must match'):
      build(rel)
  else:
    build(rel)
