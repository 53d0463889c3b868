"""The RepDistiller CIFAR-100 module builds real runs: stage bounds and the FSP "N/A" cells.

Every cell's terms are resolved in tests/test_configs.py; here `setup.build` runs end to end
(shapes only) on the two-stage rows.
"""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kdjax import config as config_lib, models
from kdjax.train import setup as setup_lib

LABELS = (np.arange(50000) % 100).astype(np.int32)
DS = types.SimpleNamespace(name='cifar100', num_classes=100, num_train=50000,
                           image_shape=(32, 32, 3), train_labels=LABELS, in_memory=True)


def _teacher(arch):
  m = models.create(arch, 100)
  v = jax.eval_shape(lambda: m.init(jax.random.key(0), jnp.zeros((2, 32, 32, 3)), train=False))
  return setup_lib.Teacher(m, v, arch, '', '')


def test_two_stage_rows_build_with_their_stage_bounds():
  teacher = _teacher('wrn_40_2')
  rd = config_lib.import_module('rd_cifar100')
  s = setup_lib.build(rd.get_config('method=ft,teacher=wrn_40_2,student=wrn_16_2'), dataset=DS,
                      teacher=teacher)
  assert [st.name for st in s.stages] == ['ft_paraphraser', 'main']
  # RepDistiller keeps the last partial batch: ceil(50000 / 64) = 782 steps per epoch.
  assert s.steps_per_epoch == 782
  assert s.stage_bounds == [(0, 30 * 782), (30 * 782, 270 * 782)]
  cfg = rd.get_config('method=fitnet_2stage,teacher=wrn_40_2,student=wrn_16_2')
  config_lib.apply_overrides(cfg, ['stages.0.epochs=1', 'epochs=2'])
  s = setup_lib.build(cfg, dataset=DS, teacher=teacher)
  assert s.stage_bounds == [(0, 782), (782, 3 * 782)]
  assert [t.method for t in s.stage_terms[0]] == ['fitnet']
  assert [t.method for t in s.stage_terms[1]] == ['kd']
  with pytest.raises(ValueError, match='channel counts must match'):
    setup_lib.build(rd.get_config('method=fsp,teacher=wrn_40_2,student=wrn_40_1'), dataset=DS,
                    teacher=teacher)
