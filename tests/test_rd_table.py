"""The RepDistiller CIFAR-100 table: every (method, pair) config resolves or is rejected with a reason."""

import os
import re
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kdjax import config as config_lib
from kdjax import models, rd_table
from kdjax.distill import api
from kdjax.train import setup as setup_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LABELS = (np.arange(50000) % 100).astype(np.int32)
_CACHE = {}


def arch_shapes(arch):
  if arch not in _CACHE:
    m = models.create(arch, 100)
    v = jax.eval_shape(lambda: m.init(jax.random.key(0), jnp.zeros((2, 32, 32, 3)), train=False))
    _CACHE[arch] = (m, v, setup_lib.feature_shapes(m, v, types.SimpleNamespace(image_shape=(32, 32, 3))))
  return _CACHE[arch]


def resolve(cfg, teacher, student):
  """What `setup.build` does with the terms of every stage, from shapes only."""
  mt, _, ft = arch_shapes(teacher)
  _, _, fs = arch_shapes(student)
  info = api.BuildInfo(fs, ft, 100, 50000, student, teacher, mt.bn_before_relu(), LABELS)
  out = []
  for st in config_lib.stages(cfg):
    specs = []
    for key, spec in st.distill.terms.items():
      spec = dict(spec)
      spec.setdefault('method', key)
      spec.setdefault('name', key)
      specs.append(spec)
    out.append((st, api.resolve_terms(specs, info)))
  return out


def _fsp_possible(teacher, student):
  _, _, ft = arch_shapes(teacher)
  _, _, fs = arch_shapes(student)
  keys = ['stem'] + [k for k in fs if re.fullmatch(r'stage\d', k)]
  return all(k in ft and fs[k].shape[-1] == ft[k].shape[-1] for k in keys)


@pytest.mark.parametrize('teacher,student', rd_table.PAIRS)
def test_every_method_resolves_or_is_rejected(teacher, student):
  for method in rd_table.METHODS:
    cfg = rd_table.config(method, teacher, student)
    config_lib.check(cfg)
    assert cfg.teacher.arch == teacher and cfg.model.name == student
    if method == 'fsp' and not _fsp_possible(teacher, student):
      with pytest.raises(ValueError, match='channel'):
        resolve(cfg, teacher, student)
      continue
    stages = resolve(cfg, teacher, student)
    if method in ('ab', 'ft', 'fsp'):
      assert [st.epochs for st, _ in stages] == [30, 240]
      init, main = stages
      assert init[0].distill.ce_weight == 0.0 and init[0].optim.schedule == 'constant'
      assert main[0].distill.ce_weight == 1.0
      assert init[1][0].name == (method if method != 'fsp' else 'fsp')
    else:
      (st, terms), = stages
      assert st.epochs == 240


def test_weights_and_stage_layouts():
  c = rd_table.config('kd', 'resnet32x4', 'resnet8x4')
  assert c.distill.ce_weight == 0.1 and c.distill.terms.kd.weight == 0.9
  c = rd_table.config('crd_kd', 'resnet32x4', 'resnet8x4')
  assert c.distill.terms.crd.weight == 0.8 and c.distill.terms.kd.weight == 1.0
  assert rd_table.config('fitnet', 'resnet56', 'resnet20').distill.terms.fitnet.weight == 100.0
  ft_init, ft_main = config_lib.stages(rd_table.config('ft', 'resnet32x4', 'resnet8x4'))
  assert ft_init.trainable == ('^aux/ft/paraphraser/',) and ft_init.optim.lr == 0.01
  assert ft_main.trainable == ('^student/', '^aux/ft/translator/')
  assert ft_main.distill.terms.ft.weight == 200.0 and ft_main.distill.terms.ft.variant == 'rd'
  ft_init, _ = config_lib.stages(rd_table.config('ft', 'resnet32x4', 'shufflenetv1'))
  assert ft_init.optim.lr == 0.01  # recipe lr of the light students
  fsp_init, fsp_main = config_lib.stages(rd_table.config('fsp', 'resnet56', 'resnet20'))
  assert fsp_init.optim.lr == 0.05 and not fsp_main.distill.terms
  ab_init, ab_main = config_lib.stages(rd_table.config('ab', 'vgg13', 'mobilenetv2'))
  assert ab_init.optim.lr == 0.01 and '^aux/ab/' in ab_init.trainable
  assert not ab_main.distill.terms
  for m in rd_table.EXTRA_METHODS:
    hint, main = resolve(rd_table.config(m, 'resnet56', 'resnet20'), 'resnet56', 'resnet20')
    assert hint[0].epochs == 100 and hint[0].optim.lr == 0.001
    assert tuple(hint[0].optim.boundaries_epochs) == (60, 80)
    assert [t.method for t in main[1]] == ['kd'] and main[0].distill.ce_weight == 0.1
  with pytest.raises(ValueError, match='unknown'):
    rd_table.config('nope', 'resnet56', 'resnet20')


def test_setup_rejects_fsp_across_channel_counts():
  m, v, _ = arch_shapes('wrn_40_2')
  teacher = setup_lib.Teacher(m, v, 'wrn_40_2', '', '')
  ds = types.SimpleNamespace(name='cifar100', num_classes=100, num_train=50000,
                             image_shape=(32, 32, 3), train_labels=LABELS)
  with pytest.raises(ValueError, match='channel'):
    setup_lib.build(rd_table.config('fsp', 'wrn_40_2', 'wrn_40_1'), dataset=ds, teacher=teacher)
  s = setup_lib.build(rd_table.config('ft', 'wrn_40_2', 'wrn_16_2'), dataset=ds, teacher=teacher)
  assert [st.name for st in s.stages] == ['ft_paraphraser', 'main']
  assert s.stage_bounds[0] == (0, 30 * (50000 // 64))


def test_config_files_match_the_table():
  for method in rd_table.METHODS:
    for t, s in rd_table.PAIRS:
      path = os.path.join(ROOT, 'configs', 'cifar100', f'{method}_{t}_{s}.py')
      assert os.path.exists(path), path
      if method == 'kd':
        continue  # the hand-written KD configs predate the table
      got = config_lib.to_json(config_lib.load_file(path))
      assert got == config_lib.to_json(rd_table.config(method, t, s)), path
