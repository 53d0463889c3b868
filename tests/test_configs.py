"""Every cell of every config module in configs/ resolves against real model shapes, or is
rejected with its stated reason; the module tables keep the papers' values.

Resolving needs shapes only (`jax.eval_shape`, cached per architecture, classes and image
shape), never data or a compile.
"""

import functools
import json
import os
import subprocess
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kdjax import bench, config as config_lib, config_cli, distill, models
from kdjax.distill import api
from kdjax.models.cohort import Cohort
from kdjax.train import setup as setup_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Models other helpers are adding; their cells are skipped (with the reason) until registered.
PENDING_MODELS = ('resnet10_cifar', 'mobilenetv1_cifar')
# Hyper-parameters agreed with the method owners that replace removed config keys.
PENDING_HPARAMS = {('self_guidance', 'final_survival_prob')}


def _registered(arch):
  try:
    models.create(arch, 10)
    return True
  except ValueError:
    return False


@functools.lru_cache(maxsize=None)
def _data(name, image_size):
  shape, classes, num_train = bench.SHAPES[name]
  if shape is None:
    shape = (image_size, image_size, 3)
  elif shape[0] is None:
    shape = (image_size, image_size, shape[1])
  return shape, classes, num_train


@functools.lru_cache(maxsize=None)
def _shapes(archs, kwargs, classes, shape):
  """(model, feature shapes) of one architecture or a cohort (`archs` a tuple)."""
  kw = dict(kwargs)
  if len(archs) > 1:
    m = Cohort(tuple(models.create(a, classes, **kw) for a in archs))
  else:
    m = models.create(archs[0], classes, **kw)
  v = jax.eval_shape(lambda: m.init(jax.random.key(0), jnp.zeros((2,) + shape), train=False))
  return m, setup_lib.feature_shapes(m, v, types.SimpleNamespace(image_shape=shape))


def resolve(cfg):
  """What `setup.build` does with every stage's terms, from cached shapes."""
  config_lib.check(cfg)
  shape, k, n = _data(cfg.data.name, cfg.data.image_size)
  kwargs = tuple(sorted(dict(cfg.model.kwargs or {}).items()))
  ms, fs = _shapes(tuple(cfg.model.cohort) or (cfg.model.name,), kwargs, k, shape)
  mt, ft = _shapes((cfg.teacher.arch,), (), k, shape) if cfg.teacher.arch else (None, None)
  info = api.BuildInfo(fs, ft, k, n, student_spec=ms.spec(), teacher_spec=mt and mt.spec(),
                       train_labels=(np.arange(n) % k).astype(np.int32))
  out = []
  for st in config_lib.stages(cfg):
    specs = [dict(dict(spec), method=dict(spec).get('method', key), name=key)
             for key, spec in st.distill.terms.items()]
    terms = api.resolve_terms(specs, info)
    if not cfg.data.get('drop_remainder', True):  # as setup.build: a masked last batch
      api.check_masking(terms)
    out.append((st, terms))
  return out


def _pending(cfg):
  archs = set(cfg.model.cohort or (cfg.model.name,)) | {cfg.teacher.arch} - {''}
  missing = sorted(a for a in archs if a in PENDING_MODELS and not _registered(a))
  registered = distill.registered_methods()
  for st in config_lib.stages(cfg):
    for k, spec in st.distill.terms.items():
      method = dict(spec).get('method', k)
      if method not in registered:
        missing.append(method)
        continue
      missing += [f'{method}.{h}' for h in spec if (method, h) in PENDING_HPARAMS
                  and h not in distill.hyperparameters(method)]
  return sorted(set(missing))


def _sweep(cells):
  pending = {}
  for module, arg in cells:
    reason = config_cli.rejected(module).get(arg)
    try:
      cfg = config_lib.load(f'{module}:{arg}')
    except ValueError as e:  # rejected by get_config (e.g. networks a paper does not define)
      assert reason and reason in str(e), (module, arg, e)
      continue
    missing = _pending(cfg)
    if missing:
      pending[f'{module}:{arg}'] = missing
      continue
    if reason:
      with pytest.raises(ValueError, match=reason):
        resolve(cfg)
    else:
      stages = resolve(cfg)
      assert stages and all(st.epochs > 0 for st, _ in stages), (module, arg)
  return pending


# A fast, deterministic sample over the mechanisms (stage layouts, cohorts, ONE branches, IE
# stages, stochastic depth, rejected cells); every cell is resolved by the slow test below.
SAMPLE = (
    ('digits', 'method=kd,teacher=resnet20,student=resnet8'),
    ('rd_cifar100', 'method=crd_kd,teacher=resnet56,student=resnet20'),
    ('rd_cifar100', 'method=ft,teacher=resnet56,student=resnet20'),
    ('rd_cifar100', 'method=sskd,teacher=resnet56,student=resnet20'),
    ('rd_cifar100', 'method=fsp,teacher=wrn_40_2,student=wrn_40_1'),
    ('kd_beyond_compression', 'data=cifar10,method=dml,student=resnet8'),
    ('kd_beyond_compression', 'data=cifar10,method=one,student=resnet8'),
    ('kd_beyond_compression', 'data=cifar10,method=fitnet,student=resnet8'),
    ('ie_kd', 'data=cifar10,method=ie_od,teacher=resnet56,student=resnet20'),
    ('ie_kd', 'data=cifar10,method=ab,teacher=resnet56,student=resnet20'),
    ('self_guidance', 'data=cifar10,arch=resnet32,method=self_guidance'),
    ('self_guidance', 'data=cifar10,arch=resnet32,method=stochastic_depth'),
    ('srrl', 'protocol=srrl,data=cifar10,teacher=resnet26,student=resnet8'),
    ('srrl', 'protocol=srrl,data=cifar100,teacher=resnet34_narrow,student=resnet10_narrow'),
    ('ipwd', 'method=ipwd_pskd,student=resnet18_cifar'),
    ('tfkd', 'method=tfkd_reg'),
    # Issue-13 methods: one cell each (the KDSVD cell is a rejected one).
    ('rd_cifar100', 'method=dist,teacher=resnet56,student=resnet20'),
    ('rd_cifar100', 'method=lskd,teacher=vgg13,student=vgg8'),
    ('rd_cifar100', 'method=kdsvd,teacher=resnet56,student=resnet20'),
    ('rd_cifar100', 'method=kdsvd,teacher=wrn_40_2,student=wrn_40_1'),
    ('ipwd', 'method=kd_la,teacher=resnet110,student=resnet20'),
    ('ipwd', 'method=reviewkd_ipwd,teacher=resnet56,student=resnet20'),
    ('self_guidance', 'data=fer2013,arch=resnet32,method=okddip'),
    ('mdistiller', 'data=imagenet2012,method=reviewkd,teacher=resnet34,student=resnet18'),
)


def test_sample_of_cells_resolves():
  assert set(SAMPLE) <= set(config_cli.all_cells())
  pending = _sweep(SAMPLE)
  assert not pending, f'cells naming unregistered architectures: {pending}'


@pytest.mark.slow
def test_every_cell_resolves_or_is_rejected_with_its_reason():
  pending = _sweep(config_cli.all_cells())
  assert not pending, (f'{len(pending)} cells name unregistered models / methods: '
                       f'{sorted({x for v in pending.values() for x in v})}')


def test_cell_count_and_every_cell_loads():
  cells = config_cli.all_cells()
  # The 626 generated files this layout replaced, plus new cells.
  assert len(cells) >= 626
  assert len(set(cells)) == len(cells)
  for module, arg in cells:
    reason = config_cli.rejected(module).get(arg)
    try:
      config_lib.check(config_lib.load(f'{module}:{arg}'))
    except ValueError as e:
      assert reason and reason in str(e), (module, arg, e)
    assert config_lib.import_module(module).workdir(arg).startswith('runs/')
  for module in config_lib.list_modules():
    assert set(config_cli.rejected(module)) <= set(config_cli.cells(module)), module


def test_unknown_cells_fail_with_the_choices():
  with pytest.raises(ValueError, match='valid: kd, fitnet'):
    config_lib.load('rd_cifar100:method=kdd,teacher=resnet56,student=resnet20')
  with pytest.raises(ValueError, match=r"\('resnet56', 'resnet20'\)"):
    config_lib.load('rd_cifar100:method=kd,teacher=resnet56,student=resnet8')
  with pytest.raises(ValueError, match='accepts: .*teacher'):
    config_lib.load('srrl:alpah=2')
  with pytest.raises(ValueError, match='cifar10 only'):
    config_lib.load('kd_beyond_compression:data=cifar100,method=kd,student=resnet8,noise=0.2')
  with pytest.raises(ValueError, match='noise 0.3'):
    config_lib.load('kd_beyond_compression:data=cifar10,method=kd,student=wrn_16_2,noise=0.3')
  with pytest.raises(FileNotFoundError, match='rd_cifar100'):
    config_lib.load('rd_cifar101:method=kd')


def _stage_view(spec, *overrides):
  return config_lib.stages(config_lib.apply_overrides(config_lib.load(spec), list(overrides)))


def test_stage_overrides_and_top_level_epochs_shorten_two_stage_runs():
  st = _stage_view('rd_cifar100:method=fitnet_2stage,teacher=resnet56,student=resnet20',
                   'stages.0.epochs=1', 'epochs=2', 'stages.1.optim.lr=0.3',
                   'stages.0.distill.terms.fitnet.weight=3')
  assert [(s.name, s.epochs) for s in st] == [('hint', 1), ('main', 2)]
  assert (st[0].optim.lr, st[1].optim.lr) == (0.001, 0.3)
  assert st[0].distill.terms.fitnet.weight == 3.0
  assert st[1].distill.terms.kd.weight == 0.9          # main stage: the top-level distill
  st = _stage_view('ie_kd:data=cifar10,method=ie_at,teacher=resnet56,student=resnet20',
                   'stages.0.epochs=0.5', 'stages.1.epochs=1', 'stages.1.distill.ce_weight=0.5')
  assert [s.epochs for s in st] == [0.5, 1] and st[1].distill.ce_weight == 0.5
  for bad, match in (('stages.2.epochs=1', 'has 2 stage'), ('stages.0.foo=1', 'unknown stage key'),
                     ('stages.0.optim.lrr=1', 'unknown optim key')):
    with pytest.raises(KeyError, match=match):
      _stage_view('rd_cifar100:method=ab,teacher=resnet56,student=resnet20', bad)
  with pytest.raises(KeyError, match='one stage'):
    _stage_view('rd_cifar100:method=kd,teacher=resnet56,student=resnet20', 'stages.0.epochs=1')


def test_removed_schema_keys_are_gone():
  base = config_lib.base_config()
  assert 'train_mode' not in base.teacher and 'update_groups' not in base.distill
  assert 'stochastic_depth_final_prob' not in base.model
  for module, arg in config_cli.all_cells():
    if arg not in config_cli.rejected(module):
      for st in config_lib.load(f'{module}:{arg}').stages:
        assert 'student_train' not in st, (module, arg)


def test_rd_cifar100_table_values():
  load = lambda arg: config_lib.load('rd_cifar100:' + arg)
  c = load('method=kd,teacher=resnet32x4,student=resnet8x4')
  assert c.distill.ce_weight == 0.1 and c.distill.terms.kd.weight == 0.9 and c.epochs == 240
  assert c.teacher.checkpoint == 'runs/cifar100/teacher_resnet32x4'
  c = load('method=crd_kd,teacher=resnet32x4,student=resnet8x4')
  assert (c.distill.terms.crd.weight, c.distill.terms.kd.weight) == (0.8, 1.0)
  assert load('method=dkd,teacher=vgg13,student=vgg8').distill.terms.dkd.beta == 6.0
  assert load('method=dkd,teacher=resnet32x4,student=resnet8x4').distill.terms.dkd.beta == 8.0
  assert load('arch=shufflenetv1').optim.lr == 0.01 and load('arch=vgg13').optim.lr == 0.05
  ft_init, ft_main = config_lib.stages(load('method=ft,teacher=resnet32x4,student=resnet8x4'))
  assert ft_init.trainable == ('^aux/ft/paraphraser/',) and ft_init.optim.lr == 0.01
  assert (ft_init.epochs, ft_main.epochs) == (30, 240) and ft_init.optim.schedule == 'constant'
  assert ft_main.trainable == ('^student/', '^aux/ft/translator/')
  assert ft_main.distill.terms.ft.weight == 200.0
  ab_init, ab_main = config_lib.stages(load('method=ab,teacher=vgg13,student=mobilenetv2'))
  assert ab_init.optim.lr == 0.01 and '^aux/ab/' in ab_init.trainable and not ab_main.distill.terms
  fsp_init, _ = config_lib.stages(load('method=fsp,teacher=resnet56,student=resnet20'))
  assert fsp_init.optim.lr == 0.05 and fsp_init.distill.ce_weight == 0.0
  for m in ('fitnet_2stage', 'fsp_2stage'):
    (hint, _), (main, terms) = resolve(load(f'method={m},teacher=resnet56,student=resnet20'))
    assert hint.epochs == 100 and hint.optim.lr == 0.001 and hint.optim.boundaries_epochs == (60, 80)
    assert [t.method for t in terms] == ['kd'] and main.distill.ce_weight == 0.1


def test_issue13_method_cells_table_values():
  load = lambda spec: config_lib.load(spec)
  c = load('rd_cifar100:method=dist,teacher=resnet32x4,student=resnet8x4')
  assert c.distill.ce_weight == 1.0
  assert (c.distill.terms.dist.beta, c.distill.terms.dist.gamma) == (2.0, 2.0)
  c = load('rd_cifar100:method=lskd,teacher=resnet32x4,student=resnet8x4')
  assert (c.distill.ce_weight, c.distill.terms.lskd.weight) == (0.1, 9.0)
  assert c.distill.terms.lskd.temperature == 2.0
  assert load('rd_cifar100:method=lskd,teacher=vgg13,student=vgg8').distill.terms.lskd.temperature == 3.0
  c = load('rd_cifar100:method=lskd,teacher=resnet50_cifar,student=mobilenetv2')
  assert (c.distill.terms.lskd.temperature, c.distill.terms.lskd.weight) == (3.0, 1.0)
  assert 'method=kdsvd,teacher=vgg13,student=vgg8' not in config_cli.rejected('rd_cifar100')
  assert config_cli.rejected('rd_cifar100')['method=kdsvd,teacher=resnet32x4,student=shufflenetv2']
  c = load('ipwd:method=kd_la,teacher=resnet32x4,student=resnet8x4')
  assert c.distill.ce_weight == 0.1 and c.distill.terms.kd.logit_adjust_tau == 1.0
  weights = {'wrn_40_2,student=wrn_16_2': 5.0, 'resnet56,student=resnet20': 0.6,
             'resnet110,student=resnet32': 1.0, 'resnet32x4,student=shufflenetv2': 8.0,
             'wrn_40_2,student=shufflenetv1': 5.0}
  for pair, w in weights.items():
    for m in ('reviewkd', 'reviewkd_ipwd'):
      t = load(f'ipwd:method={m},teacher={pair}').distill.terms.reviewkd
      assert (t.weight, t.warmup_epochs, t.get('ipw', False)) == (w, 20.0, m == 'reviewkd_ipwd')
  c = load('self_guidance:data=raf,arch=resnet32,method=okddip')
  assert c.model.name == 'okddip_resnet32' and c.distill.ce_weight == 1.0 and not c.teacher.arch
  assert c.distill.terms.okddip.rampup_epochs == 80.0 and c.epochs == 300
  for t, s, w in (('resnet34', 'resnet18', 1.0), ('resnet50', 'mobilenetv1', 8.0)):
    c = load(f'mdistiller:data=imagenet2012,method=reviewkd,teacher={t},student={s}')
    assert (c.distill.terms.reviewkd.weight, c.distill.terms.reviewkd.warmup_epochs) == (w, 1.0)
    assert c.optim.boundaries_epochs == (30, 60, 90) and c.optim.batch_size == 256


def test_kd_beyond_compression_table_values():
  load = lambda arg: config_lib.load('kd_beyond_compression:' + arg)
  c = load('data=cifar10,method=dml,student=wrn_16_2,noise=0.4')
  assert c.model.cohort == ('wrn_16_2', 'wrn_16_2') and c.distill.ce_weight == 0.0
  assert c.data.label_noise == 0.4 and c.data.pad_mode == 'reflect'
  assert c.optim.boundaries_epochs == (60, 120, 150) and c.optim.decay_factor == 0.2
  c = load('data=cifar100,method=kd,student=resnet8')
  assert c.teacher.checkpoint == 'runs/cifar100/kd_beyond_compression/teacher_resnet26'
  c = load('data=cifar10,method=bss,student=wrn_10_2')
  assert c.distill.terms.bss.attack_size == 32
  c = load('data=cifar10,method=at,student=wrn_16_2,imbalance=2')
  assert c.teacher.checkpoint == 'runs/cifar10/kd_beyond_compression/imb2/teacher_wrn_40_2'
  assert c.data.imbalance_gamma == 2.0
  c = load('data=cifar10,method=one,student=resnet20')
  assert c.model.name == 'one_resnet20' and c.epochs == 300 and c.optim.weight_decay == 1e-4
  for m, term in (('fitnet', 'fitnet'), ('fsp', 'fsp')):
    st = config_lib.stages(load(f'data=cifar10,method={m},student=wrn_16_2,imbalance=0.6'))
    assert [s.epochs for s in st] == [100, 200] and term in st[0].distill.terms
    assert st[1].optim.lr == 0.1 and st[1].distill.ce_weight == pytest.approx(0.1)
  fsp = config_lib.stages(load('data=cifar10,method=fsp,student=wrn_16_2'))[0].distill.terms.fsp
  assert tuple(fsp.pair_weights) == (1.0, 3.0, 1.0)


def test_paper_module_values():
  ie = config_lib.load('ie_kd:data=cifar10,method=ie_at,teacher=resnet56,student=resnet20,'
                       'ratio=0.3,metric=l2,exp=500')
  ae, main = config_lib.stages(ie)
  assert (main.distill.terms.ie.inherit_ratio, main.distill.terms.ie.metric,
          main.distill.terms.ie.explore_weight, main.distill.terms.ie.inherit_weight) == (
              0.3, 'l2', 500.0, 50.0)
  assert ae.trainable == ('^aux/ie/ae/',) and (ae.epochs, main.epochs) == (30.0, 160)
  imnet = config_lib.stages(config_lib.load(
      'ie_kd:data=imagenet2012,method=ie_ft,teacher=resnet34,student=resnet18'))[1]
  assert imnet.distill.terms.ie.inherit_weight == 100.0
  sg = config_lib.load('self_guidance:data=cifar10,arch=resnet50')
  assert sg.model.name == 'resnet50_basic' and sg.distill.ce_weight == 0.0
  assert sg.distill.terms.self_guidance.final_survival_prob == 0.5
  dml = config_lib.load('self_guidance:data=fer2013,arch=resnet32,method=dml')
  assert dml.model.cohort == ('resnet32',) * 3 and dml.optim.nesterov
  star = config_lib.load('ipwd:teacher=resnet32x4,student=resnet8x4,star')
  assert star.model.cohort == ('resnet8x4', 'resnet8x4')
  assert config_lib.load('ipwd:teacher=resnet110,student=resnet32,dagger').distill.terms.ipwd.dagger
  assert 'dagger' not in config_lib.load('ipwd:teacher=resnet110,student=resnet32').distill.terms.ipwd
  srrl = lambda a: config_lib.load('srrl:data=cifar100,teacher=wrn_40_4,student=wrn_16_4' + a)
  assert {a: srrl(f',layers={a}').distill.terms.srrl.layers for a in ('conv2', 'conv3', 'conv2+3+4')
          } == {'conv2': ('stage1',), 'conv3': ('stage2',), 'conv2+3+4': ('stage1', 'stage2', 'last')}
  assert 'layers' not in srrl('').distill.terms.srrl and srrl(',fm_only').distill.terms.srrl.beta == 0
  c = config_lib.load('srrl:protocol=crd,data=cifar100,teacher=resnet32x4,student=shufflenetv1')
  assert c.distill.terms.srrl.alpha == 10.0 and c.teacher.checkpoint == 'runs/cifar100/teacher_resnet32x4'


def test_written_out_examples_match_their_cells():
  pairs = {'digits/teacher_resnet20': 'digits:arch=resnet20',
           'digits/teacher_resnet8': 'digits:arch=resnet8',
           'digits/kd_resnet20_resnet8': 'digits:method=kd,teacher=resnet20,student=resnet8',
           'examples/kd': 'rd_cifar100:method=kd,teacher=resnet32x4,student=resnet8x4',
           'examples/crd_kd': 'rd_cifar100:method=crd_kd,teacher=resnet32x4,student=resnet8x4',
           'examples/self_guidance': 'self_guidance:data=cifar100,arch=resnet110'}
  for path, cell in pairs.items():
    assert config_lib.to_json(config_lib.load(path)) == config_lib.to_json(config_lib.load(cell)), path
  for path in ('examples/fitnet_two_stage', 'examples/dml'):
    resolve(config_lib.load(path))
  # The fitnet example's hint regexes select the parameters fitnet derives for wrn_16_2 stage 2.
  import re
  from kdjax.distill.methods.fitnet import hint_trainable
  m = models.create('wrn_16_2', 100)
  v = jax.eval_shape(lambda: m.init(jax.random.key(0), jnp.zeros((2, 32, 32, 3)), train=False))
  paths = ['student/' + '/'.join(str(getattr(k, 'key', k)) for k in p)
           for p, _ in jax.tree_util.tree_leaves_with_path(v['params'])]
  pick = lambda regexes: {p for p in paths if any(re.search(r, p) for r in regexes)}
  hint = config_lib.load('examples/fitnet_two_stage').stages[0]
  assert pick(hint['trainable']) == pick(hint_trainable('wrn_16_2', 2)) != set(paths)
  assert len(pick(hint['trainable'])) > 10


def test_cli_list_and_show_from_another_directory(tmp_path):
  env = dict(os.environ, PYTHONPATH=ROOT)
  run = lambda *a: subprocess.run([sys.executable, '-m', 'kdjax.main', 'config', *a], cwd=tmp_path,
                                  env=env, capture_output=True, text=True, check=True).stdout
  out = run('list', 'ipwd').splitlines()
  assert len(out) == len(config_cli.cells('ipwd'))
  assert out[0] == ('kdjax train --config configs/ipwd.py:teacher=wrn_40_2,student=wrn_16_2 '
                    '--workdir runs/cifar100/ipwd/ipwd_wrn_40_2_wrn_16_2')
  total = run('list').splitlines()[-1].split()
  assert total[0] == 'total' and int(total[1]) == len(config_cli.all_cells())
  shown = json.loads(run('show', 'configs/tfkd.py:method=tfkd_reg', '--config.epochs=3'))
  assert shown['epochs'] == 3 and shown['distill']['terms']['tfkd_reg']['temperature'] == 20.0


def test_protocols_keeping_the_last_batch_mask_it():
  # RepDistiller's and mdistiller's CIFAR DataLoaders keep the last partial batch.
  for cell in ('rd_cifar100:arch=resnet32x4', 'rd_cifar100:method=sskd,teacher=resnet56,student=resnet20',
               'mdistiller:data=cifar100,method=dot,teacher=vgg13,student=vgg8'):
    assert config_lib.load(cell).data.drop_remainder is False, cell
  for cell in ('digits:arch=resnet8', 'kd_beyond_compression:data=cifar10,method=dml,student=resnet8',
               'mdistiller:data=imagenet2012,method=reviewkd,teacher=resnet34,student=resnet18',
               'ie_kd:data=imagenet2012,method=ie_ft,teacher=resnet34,student=resnet18',
               'ie_kd:data=imagenet2012,method=kd,teacher=resnet34,student=resnet18'):
    assert config_lib.load(cell).data.drop_remainder is True, cell
  # The official IE-KD code's CIFAR DataLoader keeps it too: every CIFAR cell of ie_kd, one
  # per method (IE-FT/AT/OD both stages, IE-DML, DML, the baselines), masks every term.
  from configs import ie_kd
  first = {}
  for arg in ie_kd.cells():
    key = dict(kv.split('=') for kv in arg.split(','))
    if key['data'] != 'imagenet2012':
      first.setdefault((key['data'], key.get('method', 'arch')), arg)
  methods = {m for _, m in first}
  assert set(ie_kd.VARIANTS) | set(ie_kd.BASELINES) | set(ie_kd.TABLE4) <= methods
  for arg in first.values():
    cfg = config_lib.load(f'ie_kd:{arg}')
    assert cfg.data.drop_remainder is False, arg
    resolve(cfg)  # check_masking over every stage's terms


def test_repdistiller_protocol_uses_pytorch_bn_running_variance():
  # The RepDistiller recipe is PyTorch code: BN's running variance is the unbiased estimate.
  for cell in ('rd_cifar100:arch=resnet32x4', 'rd_cifar100:method=crd,teacher=resnet32x4,student=resnet8x4',
               'examples/kd', 'examples/fitnet_two_stage'):
    assert config_lib.load(cell).model.kwargs.bn_unbiased_running_var is True, cell
  assert 'bn_unbiased_running_var' not in config_lib.load('digits:arch=resnet8').model.kwargs
