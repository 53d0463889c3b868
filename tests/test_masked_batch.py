"""data.drop_remainder=False: a masked last partial batch trains exactly as its valid rows.

A batch of B rows whose last k are padding (repeated images, mask False) must give,
in one step, the parameters, BN statistics, auxiliary state and losses of a step on
its B - k valid rows alone (what PyTorch does on the short last batch).
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from kdjax import config as config_lib
from kdjax import models
from kdjax.data import augment
from kdjax.distill import api
from kdjax.distill import methods as _methods  # noqa: F401  (registers every method)
from kdjax.models import common
from kdjax.train import optim as optim_lib
from kdjax.train import setup as setup_lib
from kdjax.train import step as step_lib

from bn_reference import numpy_bn_train

B, K = 12, 4           # batch rows, masked (padding) rows
N_TRAIN, CLASSES = 40, 10


@pytest.mark.parametrize('unbiased', [False, True])
def test_masked_batchnorm_equals_batchnorm_on_the_valid_rows(unbiased):
  rng = np.random.default_rng(0)
  x = rng.normal(3.0, 2.0, (B, 3, 3, 5)).astype(np.float32)
  x[B - K:] = rng.normal(50.0, 9.0, (K, 3, 3, 5))  # padding rows far off: must not count
  bn = common.BatchNorm(use_running_average=False, unbiased_running_var=unbiased)
  v = bn.init(jax.random.key(0), x)
  params = {'scale': jnp.asarray(rng.uniform(0.5, 2, 5), jnp.float32),
            'bias': jnp.asarray(rng.normal(size=5), jnp.float32)}
  stats = {'mean': jnp.asarray(rng.normal(size=5), jnp.float32),
           'var': jnp.asarray(rng.uniform(0.5, 2, 5), jnp.float32)}
  mask = np.arange(B) < B - K

  def run(x, m):
    with common.batch_mask(m):
      return bn.apply({'params': params, 'batch_stats': stats}, x, mutable=['batch_stats'])
  y, new = jax.jit(run)(x, jnp.asarray(mask))
  ref_y, ref_mean, ref_var = numpy_bn_train(x[mask], np.asarray(params['scale']),
                                            np.asarray(params['bias']), np.asarray(stats['mean']),
                                            np.asarray(stats['var']), unbiased=unbiased)
  np.testing.assert_allclose(y[mask], ref_y, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(new['batch_stats']['mean'], ref_mean, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(new['batch_stats']['var'], ref_var, rtol=1e-5)
  # The same module on the valid rows without a mask agrees too (float32 vs float32).
  y2, new2 = bn.apply({'params': params, 'batch_stats': stats}, x[mask], mutable=['batch_stats'])
  np.testing.assert_allclose(y[mask], y2, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(new['batch_stats']['var'], new2['batch_stats']['var'], rtol=1e-6)
  # Eval mode and init ignore the mask; outside the block nothing is masked.
  assert common.current_batch_mask() is None


def test_masked_batchnorm_rejects_a_batch_of_another_size():
  bn = common.BatchNorm(use_running_average=False)
  x = jnp.ones((6, 2, 2, 3))
  v = bn.init(jax.random.key(0), x)
  with common.batch_mask(jnp.ones((4,), bool)):
    with pytest.raises(ValueError, match='the batch mask has shape .4,. but the input has 6 rows'):
      bn.apply(v, x, mutable=['batch_stats'])
    # Eval mode reads running statistics: no mask needed, no error.
    common.BatchNorm(use_running_average=True).apply(v, x)


# ----------------------------------------------------------------------------
# One train step: masked batch of B rows vs the B - K valid rows alone.

def _digits():
  from sklearn.datasets import load_digits
  d = load_digits()
  x = (d.images[:N_TRAIN, :, :, None] / 16.0 - 0.3).astype(np.float32)
  return x, d.target[:N_TRAIN].astype(np.int32)


class _Built:
  """Student resnet8, a random resnet8 teacher, resolved terms, a fresh state (no config file)."""

  def __init__(self, specs, *, ce_weight=1.0, teacher=True, cohort=False):
    self.x, self.y = _digits()
    self.student = models.create('resnet8', CLASSES, bn_unbiased_running_var=True)
    if cohort:  # DML / IE-DML: two resnet8 members
      from kdjax.models.cohort import Cohort
      self.student = Cohort((self.student, models.create('resnet8', CLASSES,
                                                         bn_unbiased_running_var=True)))
    self.teacher = models.create('resnet8', CLASSES) if teacher else None
    ds = type('DS', (), {'image_shape': self.x.shape[1:]})
    v = self.student.init(jax.random.key(0), jnp.zeros((2,) + self.x.shape[1:]), train=False)
    t_shapes, t_spec = None, None
    if teacher:
      self.teacher_vars = self.teacher.init(jax.random.key(1), jnp.asarray(self.x[:2]),
                                            train=False)
      t_shapes = setup_lib.feature_shapes(self.teacher, self.teacher_vars, ds)
      t_spec = self.teacher.spec()
    else:
      self.teacher_vars = {}
    info = api.BuildInfo(student_shapes=setup_lib.feature_shapes(self.student, v, ds),
                         teacher_shapes=t_shapes, num_classes=CLASSES, num_train=N_TRAIN,
                         student_spec=self.student.spec(), teacher_spec=t_spec,
                         train_labels=self.y)
    self.terms = api.resolve_terms(specs, info)
    ctx = api.example_context(info)
    aux_p, aux_s = {}, {}
    for i, t in enumerate(self.terms):
      if t.init is not None:
        aux = dict(t.init(jax.random.key(10 + i), ctx))
        aux_p[t.name] = aux.pop('params', {})
        if aux:
          aux_s[t.name] = aux
    params = {'student': v['params'], 'aux': aux_p}
    self.tx = optax.sgd(0.1, momentum=0.9)
    groups = optim_lib.update_groups(step_lib.stage_needs(self.terms))
    if len(groups) > 1:  # DML-style alternating updates: one optimizer state per group
      optim = config_lib.ConfigDict(dict(name='sgd', weight_decay=0.0, momentum=0.9,
                                         nesterov=False))
      self.tx = optim_lib.make_tx(optim, optax.constant_schedule(0.1), params,
                                  update_groups=groups)
    self.state = {'step': jnp.zeros((), jnp.int32), 'params': params,
                  'batch_stats': v['batch_stats'], 'aux_state': aux_s,
                  'opt': self.tx.init(params)}
    cfg = step_lib.StepConfig(seed=0, steps_per_epoch=4, stage_start_step=0, stage_epochs=1.0,
                              ce_weight=ce_weight, num_classes=CLASSES)
    self.fn = jax.jit(step_lib.make_train_step(
        student=self.student, teacher=self.teacher, terms=self.terms, tx=self.tx,
        batch_fn=lambda data, step, key: data, cfg=cfg))

  def batch(self, idx, mask=None):
    idx = np.asarray(idx, np.int32)
    out = {'image': jnp.asarray(self.x[idx]), 'label': jnp.asarray(self.y[idx]),
           'index': jnp.asarray(idx)}
    if mask is not None:
      out['mask'] = jnp.asarray(mask)
    return out

  def step(self, batch, state=None):
    return self.fn(jax.tree.map(jnp.array, state or self.state), self.teacher_vars, batch)


# Valid rows 5..12 of the digits, padding = the first K of them again (as gather_batch_masked).
VALID = np.arange(5, 5 + B - K)
PADDED = np.concatenate([VALID, VALID[:K]])
MASK = np.arange(B) < B - K


def _close(a, b, rtol=1e-5, err_msg=''):
  """|a - b| <= rtol * max|b| + 1e-7 (float32 sums in another order; relative to the leaf)."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  np.testing.assert_allclose(a, b, rtol=0, atol=rtol * np.max(np.abs(b)) + 1e-7, err_msg=err_msg)


def _assert_same_step(built, scale=None):
  """One step on the masked batch equals one step on its valid rows: state and losses.

  `scale` {metric: magnitude}: the tolerance of a metric that is a difference of larger
  parts (IE-KD's inheritance minus exploration) is relative to the parts.
  """
  s_masked, m_masked = built.step(built.batch(PADDED, MASK))
  s_valid, m_valid = built.step(built.batch(VALID))
  close = _close
  for key in ('params', 'batch_stats', 'aux_state', 'opt'):
    jax.tree.map(close, s_masked[key], s_valid[key])
  for k, v in m_valid.items():
    if scale and k in scale:
      np.testing.assert_allclose(m_masked[k], v, rtol=0, atol=1e-5 * float(scale[k](m_valid)),
                                 err_msg=k)
    else:
      close(m_masked[k], v, err_msg=k)
  assert float(m_masked['valid_rows']) == B - K and 'valid_rows' not in m_valid
  return s_masked, m_masked


def test_plain_ce_step_on_a_masked_batch_equals_the_valid_rows():
  built = _Built([], teacher=False)
  _, m = _assert_same_step(built)
  assert np.isfinite(float(m['loss/ce']))


PER_SAMPLE = ['kd', 'at', 'fitnet', 'nst', 'vid', 'ab', 'fsp', 'ft', 'ofd', 'kdsvd', 'lskd', 'dkd',
              'wsld']


def _check_per_sample(methods):
  specs = [dict(method=m, name=m, weight=0.1) for m in methods]
  built = _Built(specs, ce_weight=0.5)
  assert all(t.per_sample is not None and not t.masked for t in built.terms)
  # A KL-type loss (KD, DKD, WSLD, ...) is a difference of two cross-entropies: its float32
  # rounding is relative to them, so each term's tolerance scales with max(|term|, CE).
  scale = {f'loss/{k}': (lambda mv, k=k: max(abs(float(mv[f'loss/{k}'])), float(mv['loss/ce'])))
           for k in methods}
  _, m = _assert_same_step(built, scale=scale)
  assert all(np.isfinite(float(m[f'loss/{k}'])) for k in methods)


@pytest.mark.slow
def test_kd_and_fitnet_on_a_masked_batch_equal_the_valid_rows():
  # FitNet's regressor has BN: its statistics must come from the valid rows too.
  _check_per_sample(['kd', 'fitnet'])


@pytest.mark.slow
def test_per_sample_terms_on_a_masked_batch_equal_the_valid_rows():
  # Every per-sample method of the RepDistiller table in one step (one compile per batch
  # size, ~100 s on 2 cores); small weights keep the combined update well conditioned. OFD
  # runs the teacher on batch statistics; FitNet/AB/OFD/FT have BN in their auxiliary modules.
  _check_per_sample(PER_SAMPLE)


def _per_row_negatives(monkeypatch):
  """CRD draws its negatives as one [B, k] block, so a batch of 12 and one of 8 draw
  different ones; per-row keys make the draws of a row independent of the batch size."""
  from kdjax.distill.methods import crd
  orig = crd.crd_sample_negatives

  def per_row(rng, labels, sorted_idx, class_start, class_count, k):
    one = lambda i, lab: orig(jax.random.fold_in(rng, i), lab[None], sorted_idx, class_start,
                              class_count, k)[0]
    return jax.vmap(one)(jnp.arange(labels.shape[0]), labels)
  monkeypatch.setattr(crd, 'crd_sample_negatives', per_row)


@pytest.mark.slow
def test_batch_level_terms_on_a_masked_batch_equal_the_valid_rows(monkeypatch):
  # Relations over the batch (SP, RKD, PKT, CC, DIST) and CRD's NCE + memory banks.
  _per_row_negatives(monkeypatch)
  specs = [dict(method='sp', weight=1.0), dict(method='rkd', weight=0.1),
           dict(method='pkt', weight=1.0), dict(method='cc', weight=0.1),
           dict(method='dist', weight=0.5), dict(method='crd', weight=0.5, nce_k=8, feat_dim=16)]
  built = _Built(specs)
  assert all(t.masked for t in built.terms)
  state, _ = _assert_same_step(built)
  # No bank row outside the valid indices was written (the padding repeats valid indices).
  for bank in ('memory_s', 'memory_t'):
    before = np.asarray(built.state['aux_state']['crd']['memory'][bank])
    after = np.asarray(state['aux_state']['crd']['memory'][bank])
    untouched = np.setdiff1d(np.arange(N_TRAIN), VALID)
    np.testing.assert_array_equal(after[untouched], before[untouched])
    assert not np.allclose(after[VALID], before[VALID])


@pytest.mark.slow
@pytest.mark.parametrize('spec', [
    dict(method='srrl'),                                             # teacher head, MSE
    dict(method='srrl', sr_loss='kl', layers=('stage2', 'last'))])  # teacher forward_from, KL
def test_srrl_on_a_masked_batch_equals_the_valid_rows(spec):
  # Per-sample feature matching and softmax regression; the connector's BN statistics.
  built = _Built([spec])
  assert built.terms[0].masked
  # The KL form is a difference of cross-entropies: tolerance relative to CE (as KD above).
  ce_scale = lambda mv: float(mv['loss/ce'])
  keys = ('srrl/sr', 'srrl/sr_last', 'srrl/sr_stage2', 'loss/srrl', 'loss/total')
  _assert_same_step(built, scale=dict.fromkeys(keys, ce_scale))


@pytest.mark.slow
def test_pskd_on_a_masked_batch_equals_the_valid_rows():
  # Soft CE over the valid rows; only valid rows write the prediction memory (a padding row
  # repeats a valid index, and a second write to it would race).
  built = _Built([dict(method='pskd')], ce_weight=0.0, teacher=False)
  assert built.terms[0].masked
  rng = np.random.default_rng(0)
  memory = jax.nn.softmax(jnp.asarray(rng.normal(size=(N_TRAIN, CLASSES)), jnp.float32))
  built.state['aux_state']['pskd']['pskd']['memory'] = memory
  built.state['step'] = jnp.asarray(4, jnp.int32)   # epoch 1: targets mix in the memory
  state, m = _assert_same_step(built)
  after = np.asarray(state['aux_state']['pskd']['pskd']['memory'])
  untouched = np.setdiff1d(np.arange(N_TRAIN), VALID)
  np.testing.assert_array_equal(after[untouched], np.asarray(memory)[untouched])
  assert not np.allclose(after[VALID], np.asarray(memory)[VALID])
  assert float(m['pskd/alpha_t']) > 0


@pytest.mark.slow
def test_self_guidance_on_a_masked_batch_equals_the_valid_rows():
  # Both CEs and the KL over the valid rows; the expected-network pass normalises with the
  # valid rows' statistics (the same sampled sub-network: the keep mask depends on the step).
  built = _Built([dict(method='self_guidance')], ce_weight=0.0, teacher=False)
  assert built.terms[0].masked
  ce_scale = lambda mv: float(mv['self_guidance/ce_sub'])
  _assert_same_step(built, scale={'self_guidance/kl': ce_scale})


@pytest.mark.slow
@pytest.mark.parametrize('phase', ['distill', 'teacher_ss'])
def test_sskd_on_a_masked_batch_equals_the_valid_rows(phase):
  # 4N-row student pass and 3N-row teacher pass, error-level ranking, similarity columns.
  built = _Built([dict(method='sskd', phase=phase)], ce_weight=0.1 if phase == 'distill' else 0.0)
  _, m = _assert_same_step(built)
  assert np.isfinite(float(m['loss/sskd']))


@pytest.mark.slow
@pytest.mark.parametrize('alternate', [False, True])
def test_dml_on_a_masked_batch_equals_the_valid_rows(alternate):
  # Every member's CE and KL over the valid rows; alternating: two updates, a pass each.
  built = _Built([dict(method='dml', temperature=2.0, alternate=alternate)], ce_weight=0.0,
                 teacher=False, cohort=True)
  assert built.terms[0].masked
  _, m = _assert_same_step(built)
  assert all(np.isfinite(float(m[f'dml/{k}{i}'])) for k in ('ce', 'kl') for i in (0, 1))


@pytest.mark.slow
@pytest.mark.parametrize('phase', ['ae', 'distill'])
def test_ie_kd_on_a_masked_batch_equals_the_valid_rows(phase):
  # 'ae': the AE (train-mode BN) on the teacher map, student in eval mode; 'distill':
  # both split encoders' BN, L1 inheritance and exploration over the valid rows.
  built = _Built([dict(method='ie_kd', phase=phase)], ce_weight=0.0 if phase == 'ae' else 1.0)
  assert built.terms[0].masked
  parts = lambda m: 50 * (abs(m['ie/inh']) + abs(m['ie/exp']))  # 50 L_inh + 50 L_exp, L_exp < 0
  _, m = _assert_same_step(built, scale={'loss/ie': parts} if phase == 'distill' else None)
  assert np.isfinite(float(m['loss/ie']))


@pytest.mark.slow
def test_ie_dml_on_a_masked_batch_equals_the_valid_rows():
  # Online AEs over each peer (reconstruction into the peer's backbone) and each member's CE.
  specs = [dict(method='ie_dml', name='ie_m0', member=0, peer=1),
           dict(method='ie_dml', name='ie_m1', member=1, peer=0)]
  built = _Built(specs, ce_weight=0.0, teacher=False, cohort=True)
  scale = {f'loss/ie_m{i}': (lambda m, i=i: m[f'ie_m{i}/ce'] + 0.8 * m[f'ie_m{i}/rec']
                             + 50 * (abs(m[f'ie_m{i}/inh']) + abs(m[f'ie_m{i}/exp'])))
           for i in (0, 1)}
  scale['loss/total'] = lambda m: sum(scale[f'loss/ie_m{i}'](m) for i in (0, 1))
  _, m = _assert_same_step(built, scale=scale)
  assert np.isfinite(float(m['ie_m0/rec'])) and np.isfinite(float(m['ie_m1/exp']))


def test_ie_kd_distances_with_a_mask_equal_those_of_the_valid_rows():
  # Every inheritance/exploration metric (CKA included) and the reconstruction loss: a
  # padded batch with mask equals the valid rows alone; padding rows are far off.
  from kdjax.distill.methods import ie_kd
  rng = np.random.default_rng(1)
  a = rng.normal(size=(B, 2, 2, 3)).astype(np.float32)
  b = rng.normal(size=(B, 2, 2, 3)).astype(np.float32)
  a[B - K:] *= 40.0
  mask = jnp.asarray(MASK, jnp.float32)
  v = slice(0, B - K)
  for metric in ie_kd.METRICS:
    _close(ie_kd.factor_distance(a, b, metric, mask), ie_kd.factor_distance(a[v], b[v], metric),
           err_msg=metric)
    _close(ie_kd.exploration_distance(a, b, metric, mask),
           ie_kd.exploration_distance(a[v], b[v], metric), err_msg=metric)
  for norm in ('l1', 'l2'):
    _close(ie_kd.reconstruction(a, b, norm, mask), ie_kd.reconstruction(a[v], b[v], norm))
  # An all-ones mask is the unmasked value.
  ones = jnp.ones((B,))
  for metric in ie_kd.METRICS:
    _close(ie_kd.factor_distance(a, b, metric, ones), ie_kd.factor_distance(a, b, metric))


# ----------------------------------------------------------------------------
# The batch source and real runs.

from kdjax import data as data_lib  # noqa: E402
from kdjax.config import import_module  # noqa: E402
from kdjax.train import inputs, loop  # noqa: E402

recipes = import_module('common')


def _digits_cfg(drop_remainder=False, batch_size=256, epochs=2):
  cfg = recipes.digits('resnet8')
  cfg.data.drop_remainder = drop_remainder
  cfg.optim.batch_size = batch_size
  cfg.optim.warmup_epochs = 0.0
  cfg.epochs = epochs
  cfg.eval_every_epochs = cfg.checkpoint_every_epochs = 1
  cfg.log_every_steps = 1
  cfg.progress_bar = False
  return cfg


def test_an_epoch_visits_every_index_once_in_ceil_n_over_b_steps():
  cfg = _digits_cfg()
  ds = data_lib.load(cfg.data)
  b = 256
  spe = augment.steps_per_epoch(ds.num_train, b, drop_remainder=False)
  assert spe == 6 == -(-1437 // b) and augment.steps_per_epoch(ds.num_train, b) == 5
  fn = jax.jit(inputs.in_memory_batch_fn(ds, cfg.data, seed=3, batch_size=b, steps_per_epoch=spe))
  dev = {'image': jnp.asarray(ds.train_images), 'label': jnp.asarray(ds.train_labels, jnp.int32)}
  for epoch in (0, 1):
    seen = []
    for s in range(spe):
      batch = fn(dev, jnp.int32(epoch * spe + s), jax.random.key(0))
      mask = np.asarray(batch['mask'])
      assert mask.shape == (b,) and batch['image'].shape[0] == b
      assert mask.all() == (s < spe - 1)                  # only the last batch is padded
      assert mask.sum() == (b if s < spe - 1 else 1437 - 5 * b)
      idx = np.asarray(batch['index'])
      np.testing.assert_array_equal(np.asarray(batch['label']), ds.train_labels[idx])
      seen.extend(idx[mask].tolist())
    assert sorted(seen) == list(range(ds.num_train))     # every index exactly once


def test_a_divisible_dataset_gives_the_unmasked_batches_bit_for_bit():
  # B divides N: drop_remainder=False is exactly drop_remainder=True (no mask at all).
  cfg = _digits_cfg()
  ds = data_lib.load(cfg.data)
  dev = {'image': jnp.asarray(ds.train_images[:1400]),
         'label': jnp.asarray(ds.train_labels[:1400], jnp.int32)}
  ds_1400 = type('DS', (), {'num_train': 1400, 'mean': ds.mean, 'std': ds.std})
  outs = []
  for drop in (True, False):
    cfg.data.drop_remainder = drop
    spe = augment.steps_per_epoch(1400, 100, drop)
    assert spe == 14
    fn = inputs.in_memory_batch_fn(ds_1400, cfg.data, seed=0, batch_size=100, steps_per_epoch=spe)
    outs.append(jax.jit(fn)(dev, jnp.int32(13), jax.random.key(1)))
  assert set(outs[0]) == set(outs[1]) == {'image', 'label', 'index'}
  jax.tree.map(np.testing.assert_array_equal, outs[0], outs[1])


@pytest.mark.slow
def test_an_all_valid_mask_matches_the_unmasked_step():
  # The masked program on a full batch (all rows valid) is the unmasked step up to rounding.
  built = _Built([dict(method='kd', weight=0.9)], ce_weight=0.1)
  idx = np.arange(B)
  s_m, m_m = built.step(built.batch(idx, np.ones(B, bool)))
  s_u, m_u = built.step(built.batch(idx))
  jax.tree.map(_close, s_m['params'], s_u['params'])
  jax.tree.map(_close, s_m['batch_stats'], s_u['batch_stats'])
  _close(m_m['loss/total'], m_u['loss/total'])


def _final_params(workdir, cfg):
  from kdjax.train import checkpoint as ckpt_lib
  return ckpt_lib.restore_exported(os.path.join(workdir, 'checkpoints'))


@pytest.mark.slow
def test_run_keeps_the_last_batch_and_resumes_exactly(tmp_path):
  # 2 epochs of ceil(1437 / 256) = 6 steps; stopped just before an epoch's masked last step.
  cfg = _digits_cfg()
  full = loop.train_and_evaluate(cfg, str(tmp_path / 'full'))
  records = [json.loads(l) for l in open(tmp_path / 'full' / 'metrics.jsonl')]
  train = [r for r in records if r['kind'] == 'train']
  assert [r['step'] for r in train] == list(range(1, 13))
  assert [r['valid_rows'] for r in train] == [256] * 5 + [157] + [256] * 5 + [157]
  epoch = [r for r in records if r['kind'] == 'train_epoch']
  assert [r['step'] for r in epoch] == [6, 12]
  # Per-epoch means weigh each step by its valid rows (images), as a per-image mean.
  acc = [r['train_accuracy'] for r in train[:6]]
  np.testing.assert_allclose(epoch[0]['train_accuracy'],
                             (256 * sum(acc[:5]) + 157 * acc[5]) / 1437, rtol=1e-6)
  part = loop.train_and_evaluate(cfg, str(tmp_path / 'part'), stop_after_steps=11)
  assert part == {'interrupted': True, 'step': 11}
  resumed = loop.train_and_evaluate(cfg, str(tmp_path / 'part'))
  assert resumed['final'] == full['final']
  _, a = _final_params(str(tmp_path / 'full'), cfg)
  _, b = _final_params(str(tmp_path / 'part'), cfg)
  jax.tree.map(np.testing.assert_array_equal, a, b)


# ----------------------------------------------------------------------------
# Terms and datasets that cannot mask fail before anything compiles.

def test_a_term_without_masking_is_rejected_at_setup_with_the_fix():
  cfg = _digits_cfg()
  # IPWD with PS-KD targets: teacher-free, so it builds on the digits recipe.
  cfg.distill.terms = config_lib.ConfigDict({'ipwd': {'method': 'ipwd', 'teacher_source': 'pskd'}})
  with pytest.raises(ValueError, match=r"term 'ipwd' \(method 'ipwd'\) cannot exclude masked "
                                       r"rows.*set data.drop_remainder=True"):
    setup_lib.build(cfg)
  cfg.data.drop_remainder = True
  assert setup_lib.build(cfg).steps_per_epoch == 5
  cfg.distill.terms = config_lib.ConfigDict({'tfkd_reg': {'method': 'tfkd_reg'}})
  cfg.data.drop_remainder = False
  assert setup_lib.build(cfg).steps_per_epoch == 6


def test_a_streamed_dataset_rejects_a_masked_last_batch():
  cfg = _digits_cfg()
  fake = type('Streamed', (), {'name': 'imagenet2012', 'num_classes': 10, 'num_train': 1000,
                               'in_memory': False, 'image_shape': (8, 8, 1)})
  with pytest.raises(ValueError, match="needs an in-memory dataset; 'imagenet2012' is streamed"):
    setup_lib.build(cfg, dataset=fake)


def test_the_step_rejects_an_unmasked_term_on_a_masked_batch_while_tracing():
  term = api.Term(name='batchy', method='batchy', weight=1.0, needs_teacher=False,
                  loss=api.no_aux(lambda ctx: jnp.var(ctx.student['logits'])))
  built = _Built([], teacher=False)
  cfg = step_lib.StepConfig(seed=0, steps_per_epoch=1, stage_start_step=0, stage_epochs=1.0,
                            ce_weight=1.0, num_classes=CLASSES)
  fn = step_lib.make_train_step(student=built.student, teacher=None, terms=[term], tx=built.tx,
                                batch_fn=lambda d, s, k: d, cfg=cfg)
  with pytest.raises(ValueError, match=r"term 'batchy' \(method 'batchy'\)"):
    jax.eval_shape(fn, built.state, {}, built.batch(PADDED, MASK))
  jax.eval_shape(fn, built.state, {}, built.batch(VALID))  # no mask: runs as always


@pytest.mark.slow
def test_other_per_sample_terms_on_a_masked_batch_equal_the_valid_rows():
  # Tf-KD (both), IPWD's weighting of KD (weights normalised over the valid rows), ReviewKD.
  specs = [dict(method='tfkd_reg', weight=0.1), dict(method='tfkd_self', weight=0.1),
           dict(method='ipw', name='ipw_kd', term=dict(method='kd'), warmup_epochs=0.0),
           dict(method='reviewkd', weight=0.1)]
  built = _Built(specs, ce_weight=0.5)
  _assert_same_step(built)


# ----------------------------------------------------------------------------
# Seeds in parallel and several devices (slow: whole runs).

@pytest.mark.slow
def test_a_seed_of_a_masked_group_equals_its_separate_run(tmp_path):
  from kdjax.train import multiseed
  cfg = _digits_cfg(epochs=1)           # 6 steps, the 6th masked
  cfg.seeds = (3, 4)
  out = loop.train_and_evaluate(cfg, str(tmp_path / 'group'))
  single_cfg = _digits_cfg(epochs=1)
  single_cfg.seed = 4
  single = loop.train_and_evaluate(single_cfg, str(tmp_path / 'single'))
  res = out['runs'][1]
  np.testing.assert_allclose([res['final'][k] for k in sorted(single['final'])],
                             [single['final'][k] for k in sorted(single['final'])], rtol=1e-5)
  step, a = _final_params(str(tmp_path / 'single'), single_cfg)
  step_g, g = _final_params(str(tmp_path / 'group'), cfg)
  assert step == step_g == 6
  b = multiseed.unstack(g, 1)
  jax.tree.map(lambda x, y: _close(x, y, rtol=1e-4), a['params'], b['params'])
  jax.tree.map(lambda x, y: _close(x, y, rtol=1e-4), a['batch_stats'], b['batch_stats'])
  rec = [json.loads(l) for l in open(tmp_path / 'group' / 'seed1' / 'metrics.jsonl')]
  assert [r['valid_rows'] for r in rec if r['kind'] == 'train'] == [256] * 5 + [157]


SHARDED = '''
import sys, tempfile
sys.path.insert(0, sys.argv[1])
import jax, numpy as np
from kdjax.config import import_module
recipes = import_module('common')
from kdjax.train import checkpoint as ck, loop, setup as setup_lib
assert jax.device_count() == 8
teacher = tempfile.mkdtemp()
t = recipes.digits('resnet8'); t.epochs = 1; t.progress_bar = False
loop.train_and_evaluate(t, teacher)
cfg = recipes.student('digits', 'resnet8', 'resnet8', {
    'crd': dict(method='crd', weight=0.8, nce_k=256), 'kd': dict(method='kd', weight=1.0)})
cfg.teacher.checkpoint = teacher
cfg.epochs = 1; cfg.progress_bar = False; cfg.optim.warmup_epochs = 0.0
# 2 steps of 720, the 2nd with 717 valid rows whose 3 padding rows repeat indices of the 1st
# (CRD's temperature-0.07 contrast amplifies rounding over more steps: see test_multiseed.py)
cfg.optim.batch_size = 720; cfg.data.drop_remainder = False

def run(n_dev):
    orig, workdir = setup_lib.make_mesh, tempfile.mkdtemp()
    setup_lib.make_mesh = lambda: orig(jax.devices()[:n_dev])
    try:
        loop.train_and_evaluate(cfg, workdir)
        s = setup_lib.build(cfg)
        c = ck.Checkpointer(workdir + '/checkpoints')
        step, state = loop.restore(s, c, setup_lib.init_variables(s)); c.close()
        return step, jax.device_get({k: state[k] for k in ('params', 'batch_stats', 'aux_state')})
    finally:
        setup_lib.make_mesh = orig

s1, a = run(1)
s8, b = run(8)
assert s1 == s8 == 2
def close(path, x, y):
    np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5, err_msg=jax.tree_util.keystr(path))
jax.tree_util.tree_map_with_path(close, a, b)
print('OK')
'''


@pytest.mark.slow
def test_a_masked_batch_on_eight_devices_matches_one():
  # The mask is batch-sharded like the labels; BN and CRD reduce over the global valid rows.
  import subprocess
  import sys
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=8', JAX_PLATFORMS='cpu')
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = subprocess.run([sys.executable, '-c', SHARDED, root], env=env, capture_output=True,
                       text=True, timeout=900)
  assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
  assert 'OK' in out.stdout
