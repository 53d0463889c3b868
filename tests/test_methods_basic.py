"""Tests of the parameter-free method registrations (kd, dkd, tfkd_reg, wsld, at, nst, fsp, sp, rkd*, pkt)."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kdjax import distill, models
from kdjax.distill import api
from kdjax.distill.methods import at as at_lib
from kdjax.distill.methods import dkd as dkd_lib
from kdjax.distill.methods import fsp as fsp_lib
from kdjax.distill.methods import kd as kd_lib
from kdjax.distill.methods import nst as nst_lib
from kdjax.distill.methods import pkt as pkt_lib
from kdjax.distill.methods import rkd as rkd_lib
from kdjax.distill.methods import sp as sp_lib
from kdjax.distill.methods import wsld as wsld_lib

BATCH = 4
NUM_CLASSES = 10
BASIC = ('kd', 'dkd', 'at', 'sp', 'rkd', 'rkd_d', 'rkd_a', 'pkt', 'nst', 'fsp', 'tfkd_reg',
         'wsld')
DEFAULT_WEIGHTS = {'kd': 0.9, 'dkd': 1.0, 'at': 1000.0, 'sp': 3000.0, 'rkd': 1.0,
                   'rkd_d': 25.0, 'rkd_a': 50.0, 'pkt': 30000.0, 'nst': 50.0, 'fsp': 1.0,
                   'tfkd_reg': 0.1, 'wsld': 2.5}


def cifar_resnet_shapes(widths, spatial=(32, 16, 8)):
  """Feature shapes of a CIFAR ResNet/WRN-like model (stem, 3 stages, pooled, logits)."""
  sds = lambda *s: jax.ShapeDtypeStruct((BATCH,) + s, jnp.float32)
  shapes = {'stem': sds(spatial[0], spatial[0], 16)}
  for i, (c, h) in enumerate(zip(widths, spatial), 1):
    shapes[f'stage{i}'] = sds(h, h, c)
    shapes[f'stage{i}_preact'] = sds(h, h, c)
  shapes['pooled'] = sds(widths[-1])
  shapes['logits'] = sds(NUM_CLASSES)
  return shapes


def make_info(student=(16, 32, 64), teacher=(32, 64, 128), with_teacher=True):
  return api.BuildInfo(
      student_shapes=cifar_resnet_shapes(student),
      teacher_shapes=cifar_resnet_shapes(teacher) if with_teacher else None,
      num_classes=NUM_CLASSES, num_train=100, student_spec=_spec('resnet20'),
      teacher_spec=_spec('wrn_40_2' if teacher != student else 'resnet56'))


@functools.lru_cache(maxsize=None)
def _spec(arch):
  return models.spec(arch, NUM_CLASSES)


def random_context(info, seed=0, progress=0.0):
  # numpy, not jax.random: eagerly, each new shape would compile a threefry kernel (~0.6 s).
  rng = np.random.default_rng(seed)
  def feats(shapes):
    if shapes is None:
      return None
    return {k: jnp.asarray(rng.normal(size=v.shape), v.dtype) for k, v in shapes.items()}
  ctx = api.example_context(info, batch=BATCH)
  return dataclasses.replace(
      ctx, student=feats(info.student_shapes),
      teacher=jax.tree.map(jax.lax.stop_gradient, feats(info.teacher_shapes)),
      labels=jnp.arange(BATCH, dtype=jnp.int32) % NUM_CLASSES,
      progress=jnp.asarray(progress, jnp.float32))


def jit_loss(term, ctx):
  """Term.loss jitted over the Context's arrays (Context itself is not a pytree)."""
  @jax.jit
  def run(student, teacher, labels, progress):
    return term.loss({}, dataclasses.replace(ctx, student=student, teacher=teacher,
                                              labels=labels, progress=progress))
  return lambda c: run(c.student, c.teacher, c.labels, c.progress)


def info_for(method):
  # FSP needs equal channel counts (resnet56 -> resnet20 style pair).
  return make_info(teacher=(16, 32, 64)) if method == 'fsp' else make_info()


def test_all_basic_methods_registered():
  registered = distill.registered_methods()
  for name in BASIC:
    assert name in registered, name
    module = {'tfkd_reg': 'tfkd', 'rkd_d': 'rkd', 'rkd_a': 'rkd'}.get(name, name)
    assert registered[name].builder.__module__ == f'kdjax.distill.methods.{module}'


@pytest.mark.parametrize('method', BASIC)
def test_builds_and_gives_finite_scalar(method):
  info = info_for(method)
  (term,) = distill.build_term({'method': method}, info)
  assert term.name == method and term.method == method
  assert term.weight == DEFAULT_WEIGHTS[method]
  assert term.init is None
  assert term.needs_teacher == (method != 'tfkd_reg')
  ctx = random_context(info)
  loss, metrics, new_aux = jit_loss(term, ctx)(ctx)
  assert loss.shape == () and np.isfinite(float(loss)), (method, loss)
  assert new_aux == {}
  assert isinstance(metrics, dict)


def test_default_features():
  info = make_info()
  ctx = random_context(info)
  from kdjax import losses
  cases = {
      'at': at_lib.attention([ctx.student[f'stage{i}'] for i in (1, 2, 3)],
                             [ctx.teacher[f'stage{i}'] for i in (1, 2, 3)]),
      'nst': nst_lib.nst([ctx.student[f'stage{i}'] for i in (1, 2, 3)],
                        [ctx.teacher[f'stage{i}'] for i in (1, 2, 3)]),
      'sp': sp_lib.similarity_preserving([ctx.student['stage3']], [ctx.teacher['stage3']]),
      'pkt': pkt_lib.pkt(ctx.student['pooled'], ctx.teacher['pooled']),
      'rkd': rkd_lib.rkd(ctx.student['pooled'], ctx.teacher['pooled']),
      'rkd_d': rkd_lib.rkd_distance(ctx.student['pooled'], ctx.teacher['pooled']),
      'rkd_a': rkd_lib.rkd_angle(ctx.student['pooled'], ctx.teacher['pooled']),
      'kd': losses.kd(ctx.student['logits'], ctx.teacher['logits'], temperature=4.0),
      'wsld': wsld_lib.wsld(ctx.student['logits'], ctx.teacher['logits'], ctx.labels,
                          temperature=2.0),
  }
  for method, want in cases.items():
    (term,) = distill.build_term({'method': method}, info)
    np.testing.assert_allclose(float(term.loss({}, ctx)[0]), float(want), rtol=1e-5)
  fsp_info = make_info(teacher=(16, 32, 64))
  fctx = random_context(fsp_info)
  (term,) = distill.build_term({'method': 'fsp', 'pair_weights': [1, 3, 1]}, fsp_info)
  keys = ('stem', 'stage1', 'stage2', 'stage3')
  want = fsp_lib.fsp([fctx.student[k] for k in keys], [fctx.teacher[k] for k in keys],
                    pair_weights=[1, 3, 1])
  np.testing.assert_allclose(float(term.loss({}, fctx)[0]), float(want), rtol=1e-5)


def test_feature_selection_by_name_or_list():
  info = make_info()
  ctx = random_context(info)
  (one,) = distill.build_term({'method': 'at', 'student_features': 'stage3',
                               'teacher_features': 'stage3'}, info)
  (two,) = distill.build_term({'method': 'at', 'student_features': ['stage2', 'stage3'],
                               'teacher_features': ['stage2', 'stage3'], 'name': 'at23'},
                              info)
  assert two.name == 'at23'
  np.testing.assert_allclose(
      float(one.loss({}, ctx)[0]),
      float(at_lib.attention([ctx.student['stage3']], [ctx.teacher['stage3']])), rtol=1e-5)
  np.testing.assert_allclose(
      float(two.loss({}, ctx)[0]),
      float(at_lib.attention([ctx.student['stage2'], ctx.student['stage3']],
                             [ctx.teacher['stage2'], ctx.teacher['stage3']])), rtol=1e-5)
  # A mismatched student/teacher spatial pair is pooled (stage1 32x32 vs stage3 8x8).
  (mixed,) = distill.build_term({'method': 'nst', 'student_features': 'stage1',
                                 'teacher_features': 'stage3'}, info)
  assert np.isfinite(float(mixed.loss({}, ctx)[0]))


def test_unknown_hyperparameter_says_did_you_mean():
  with pytest.raises(ValueError, match="did you mean 'temperature'"):
    distill.build_term({'method': 'kd', 'temprature': 3.0}, make_info())
  with pytest.raises(ValueError, match="did you mean 'distance_weight'"):
    distill.build_term({'method': 'rkd', 'distance_wieght': 3.0}, make_info())


@pytest.mark.parametrize('method', ['at', 'sp', 'nst', 'fsp', 'rkd', 'pkt'])
def test_unknown_feature_says_did_you_mean(method):
  with pytest.raises(ValueError, match="did you mean 'stage2'"):
    distill.build_term({'method': method, 'student_features': ['stag2']}, info_for(method))
  with pytest.raises(ValueError, match="did you mean 'pooled'"):
    distill.build_term({'method': method, 'teacher_features': 'poold'}, info_for(method))


def test_feature_count_mismatch_rejected():
  with pytest.raises(ValueError, match='same number'):
    distill.build_term({'method': 'at', 'student_features': ['stage2', 'stage3'],
                        'teacher_features': ['stage3']}, make_info())


def test_fsp_rejects_mismatched_channels():
  # wrn_40_2 -> wrn_40_1 style: teacher stages twice as wide.
  with pytest.raises(ValueError, match='channel counts must match'):
    distill.build_term({'method': 'fsp'}, make_info(student=(16, 32, 64), teacher=(32, 64, 128)))
  with pytest.raises(ValueError, match='pair_weights'):
    distill.build_term({'method': 'fsp', 'pair_weights': [1, 3]}, info_for('fsp'))


def test_maps_required_for_map_losses():
  with pytest.raises(ValueError, match='NHWC'):
    distill.build_term({'method': 'at', 'student_features': 'pooled',
                        'teacher_features': 'pooled'}, make_info())


def test_bad_hyperparameter_values_rejected():
  with pytest.raises(ValueError, match='temperature'):
    distill.build_term({'method': 'kd', 'temperature': 0.0}, make_info())
  with pytest.raises(ValueError, match='correct_prob'):
    distill.build_term({'method': 'tfkd_reg', 'correct_prob': 1.5}, make_info())


def test_class_count_mismatch_rejected():
  info = make_info()
  teacher = dict(info.teacher_shapes, logits=jax.ShapeDtypeStruct((BATCH, 100), jnp.float32))
  with pytest.raises(ValueError, match='class counts'):
    distill.build_term({'method': 'kd'}, dataclasses.replace(info, teacher_shapes=teacher))


def test_teacher_free_and_teacher_required():
  info = make_info(with_teacher=False)
  (term,) = distill.resolve_terms([{'method': 'tfkd_reg'}], info)
  loss, _, _ = term.loss({}, random_context(info))
  assert np.isfinite(float(loss))
  with pytest.raises(ValueError, match='needs a teacher'):
    distill.resolve_terms([{'method': 'kd'}], info)


def test_dkd_warmup_follows_progress():
  info = make_info()
  (term,) = distill.build_term({'method': 'dkd'}, info)
  ctx = random_context(info)
  full = float(dkd_lib.dkd(ctx.student['logits'], ctx.teacher['logits'], ctx.labels))
  loss_fn = jit_loss(term, ctx)
  for progress, ramp in ((0.0, 1 / 20), (0.5, 1 / 20), (4.2, 5 / 20), (19.0, 1.0),
                         (50.0, 1.0)):
    loss, metrics, _ = loss_fn(dataclasses.replace(ctx, progress=jnp.asarray(progress)))
    np.testing.assert_allclose(float(loss), ramp * full, rtol=1e-5)
    np.testing.assert_allclose(float(metrics['warmup']), ramp, rtol=1e-6)
  (no_warm,) = distill.build_term({'method': 'dkd', 'warmup_epochs': 0}, info)
  np.testing.assert_allclose(float(no_warm.loss({}, ctx)[0]), full, rtol=1e-5)


def test_rkd_single_terms_match_combined():
  info = make_info()
  ctx = random_context(info)
  total = 0.0
  for method in ('rkd_d', 'rkd_a'):
    (term,) = distill.build_term({'method': method}, info)
    total += term.weight * float(term.loss({}, ctx)[0])
  (rkd,) = distill.build_term({'method': 'rkd'}, info)
  np.testing.assert_allclose(total, float(rkd.loss({}, ctx)[0]), rtol=1e-5)


def test_gradient_reaches_student_only():
  info = make_info()
  ctx = random_context(info)
  (term,) = distill.build_term({'method': 'at'}, info)

  def f(student, teacher):
    return term.loss({}, dataclasses.replace(ctx, student=student, teacher=teacher))[0]
  g_s, g_t = jax.jit(jax.grad(f, argnums=(0, 1)))(ctx.student, ctx.teacher)
  assert all(float(jnp.abs(v).max()) == 0 for v in jax.tree.leaves(g_t))
  assert float(jnp.abs(g_s['stage3']).max()) > 0


def test_duplicate_registration_raises():
  with pytest.raises(ValueError, match='already registered'):
    api.register_method('kd', family='logits', paper='dup')(lambda info: None)
  assert distill.get_method('kd').builder is kd_lib.build_kd


def test_stochastic_depth_declares_the_survival_schedule():
  """Parameter-free: no loss, only the stochastic-depth student pass (p_l = 1 - l/L (1 - p_L))."""
  (term,) = distill.build_term({'method': 'stochastic_depth', 'final_survival_prob': 0.5},
                               make_info(with_teacher=False))
  blocks = _spec('resnet20').num_blocks
  assert blocks == 9
  np.testing.assert_allclose(term.needs.survival, 1.0 - np.arange(1, 10) / 9 * 0.5, rtol=1e-6)
  assert not term.needs_teacher and term.init is None
  ctx = random_context(make_info())
  assert float(term.loss({}, ctx)[0]) == 0.0
  vgg = dataclasses.replace(make_info(with_teacher=False), student_spec=_spec('vgg8'))
  with pytest.raises(ValueError, match='no residual blocks'):
    distill.build_term({'method': 'stochastic_depth'}, vgg)
  with pytest.raises(ValueError, match='final_survival_prob'):
    distill.build_term({'method': 'stochastic_depth', 'final_survival_prob': 0.0},
                       make_info(with_teacher=False))
