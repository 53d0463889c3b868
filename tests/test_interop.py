"""PyTorch interop: parity with the reference nets, wrappers, strict errors, an imported teacher.

The PyTorch nets are this suite's own definitions (tests/torch_refs), written after
the RepDistiller / torchvision / mdistiller layer order and names.
"""

import json
import os

import jax
import numpy as np
import pytest

torch = pytest.importorskip('torch')

from kdjax import data as data_lib  # noqa: E402
from kdjax import main  # noqa: E402
from kdjax import models  # noqa: E402
from kdjax.config import import_module  # noqa: E402
recipes = import_module('common')  # configs/common.py: the shared recipes
from kdjax.data import digits  # noqa: E402
from kdjax.interop import mapping, torch_io, workdir as workdir_lib  # noqa: E402
from kdjax.train import loop, setup as setup_lib  # noqa: E402
from torch_refs import build, randomize  # noqa: E402

_FAST = ('resnet8', 'resnet110', 'wrn_16_2', 'vgg8', 'resnet18')
_SLOW = ('resnet32x4', 'mobilenetv2', 'shufflenetv1', 'shufflenetv2', 'resnet18_cifar',
         'resnet50_cifar', 'resnet50', 'mobilenetv1', 'resnet8x4', 'wrn_40_2', 'vgg13', 'resnet34')
_IMAGENET = ('resnet18', 'resnet34', 'resnet50', 'mobilenetv1')


def _nhwc(t):
  a = t.detach().numpy()
  return a.transpose(0, 2, 3, 1) if a.ndim == 4 else a


def _rel(a, b):
  return float(np.abs(a - b).max() / np.abs(a).max())


def parity(arch, num_classes=10, seed=0):
  """(net, state_dict, variables, {feature: rel err}) for random weights and BN statistics."""
  hw = 32 if arch in _IMAGENET else 16
  net = randomize(build(arch, num_classes), seed)
  sd = {k: v.clone() for k, v in net.state_dict().items()}
  variables = torch_io.to_variables(arch, torch_io.unwrap(sd), num_classes, (hw, hw, 3))
  x = np.random.RandomState(seed).randn(2, hw, hw, 3).astype(np.float32)
  with torch.no_grad():
    _, t_feats = net(torch.from_numpy(x.transpose(0, 3, 1, 2)))
  model = models.create(arch, num_classes)
  _, j_feats = model.apply(variables, x, train=False)  # eager: no compile of deep nets
  assert set(t_feats) == set(j_feats)
  errs = {k: _rel(_nhwc(t_feats[k]), np.asarray(j_feats[k])) for k in t_feats}
  return net, sd, variables, errs


@pytest.mark.parametrize('arch', list(_FAST) + [pytest.param(a, marks=pytest.mark.slow) for a in _SLOW])
def test_import_matches_reference_and_exports_back_exactly(arch):
  net, sd, variables, errs = parity(arch)
  assert max(errs.values()) < 1e-4, errs
  back = torch_io.to_state_dict(arch, variables)
  assert set(back) == set(sd)
  for k, v in sd.items():
    assert back[k].shape == tuple(v.shape), k
    if not k.endswith('num_batches_tracked'):
      np.testing.assert_array_equal(back[k], v.numpy(), err_msg=k)
  fresh = build(arch, 10)
  fresh.load_state_dict({k: torch.from_numpy(v) for k, v in back.items()}, strict=True)
  if arch == 'resnet110':  # 18 blocks a stage: layer1_10 sorts before layer1_2 in JAX's tree order
    for i in (2, 10, 17):
      np.testing.assert_array_equal(variables['params'][f'layer1_{i}']['conv1']['kernel'],
                                    sd[f'layer1.{i}.conv1.weight'].numpy().transpose(2, 3, 1, 0))


def test_grouped_and_depthwise_kernels_map_oihw_to_hwio():
  # Depthwise: groups = channels, torch [C, 1, kh, kw] -> flax [kh, kw, 1, C]. (Grouped convs
  # with 1 < groups < C, ShuffleV1's, are covered by its parity test.)
  sd = {k: v.numpy() for k, v in randomize(build('mobilenetv1', 5)).state_dict().items()}
  v = torch_io.to_variables('mobilenetv1', torch_io.unwrap(sd), 5, (32, 32, 3))
  dw = sd['model.2.0.weight']  # [64, 1, 3, 3]
  assert dw.shape == (64, 1, 3, 3)
  assert v['params']['layer2']['dw_conv']['kernel'].shape == (3, 3, 1, 64)
  assert v['params']['layer2']['dw_conv']['kernel'][1, 2, 0, 7] == dw[7, 0, 1, 2]
  assert v['params']['head']['kernel'][3, 4] == sd['fc.weight'][4, 3]


def _tiny_sd():
  return {'conv1.weight': torch.ones(2, 1, 3, 3), 'bn1.weight': torch.ones(2),
          'bn1.num_batches_tracked': torch.tensor(5)}


@pytest.mark.parametrize('wrap', [
    lambda sd: sd,
    lambda sd: {'model': sd, 'epoch': 240, 'best_acc': torch.tensor(0.8)},
    lambda sd: {'state_dict': sd, 'optimizer': {'state': {}}},
    lambda sd: {'model_state_dict': sd},
    lambda sd: {'module.' + k: v for k, v in sd.items()},
    lambda sd: {'model': {'module._orig_mod.' + k: v for k, v in sd.items()}},
])
def test_unwrap_accepts_every_wrapper_and_prefix(wrap, tmp_path):
  path = str(tmp_path / 'ckpt.pth')
  torch.save(wrap(_tiny_sd()), path)
  got = torch_io.load_state_dict(path)
  assert list(got) == ['conv1.weight', 'bn1.weight']  # num_batches_tracked dropped, order kept
  assert got['conv1.weight'].dtype == np.float32 and got['conv1.weight'].shape == (2, 1, 3, 3)


def test_unwrap_distiller_needs_a_prefix():
  sd = {'module.student.fc.weight': torch.zeros(3, 2), 'module.teacher.fc.weight': torch.ones(5, 2)}
  with pytest.raises(ValueError, match='--prefix student.'):
    torch_io.unwrap({'model': sd})
  got = torch_io.unwrap({'model': sd}, prefix='teacher.')
  assert list(got) == ['fc.weight'] and got['fc.weight'].shape == (5, 2)
  with pytest.raises(ValueError, match='no state_dict'):
    torch_io.unwrap({'epoch': 3, 'acc': 0.5})


def test_torchvision_names_and_guess():
  assert mapping.torch_key('torchvision_resnet', ('params', 'layer3_0', 'shortcut_bn', 'scale')) == \
      'layer3.0.downsample.1.weight'
  assert mapping.torch_key('rd_vgg', ('batch_stats', 'block2_bn1', 'var')) == 'block2.4.running_var'
  assert mapping.torch_key('rd_mobilenetv2', ('params', 'blocks3_1', 'dw_conv', 'kernel')) == \
      'blocks.3.1.conv.3.weight'
  assert mapping.torch_key('rd_wrn', ('params', 'block2_0', 'conv_shortcut', 'kernel')) == \
      'block2.layer.0.convShortcut.weight'
  shapes = {k: tuple(v.shape) for k, v in build('resnet32', 100).state_dict().items()}
  assert mapping.guess(shapes) == 'RD resnet{6n+2}[x4] with blocks per stage (5, 5, 5), 100 classes'


def _save_digits_net(arch, path, num_classes=10, seed=0, wrap=True):
  net = randomize(build(arch, num_classes, in_ch=1), seed)
  sd = net.state_dict()
  torch.save({'model': {'module.' + k: v for k, v in sd.items()}} if wrap else sd, path)
  return net


def _cli(capsys, *argv):
  rc = main.run(list(argv))
  out = capsys.readouterr()
  return rc, out.out, out.err


def test_wrong_arch_or_class_count_fails_listing_mismatches_and_writes_nothing(tmp_path, capsys):
  ckpt = str(tmp_path / 'r8.pth')
  _save_digits_net('resnet8', ckpt)
  wd = str(tmp_path / 'wd')
  rc, _, err = _cli(capsys, 'import-torch', '--arch', 'resnet14', '--checkpoint', ckpt,
                    '--dataset', 'digits', '--workdir', wd)
  assert rc == 2
  # resnet14 has a second block per stage: 3 x (2 convs + 2 BNs x 4 tensors) = 30 unfilled.
  assert '(47 tensors, 77 expected)' in err
  assert '30 resnet14 variables have no tensor: layer1.1.bn1.bias' in err
  assert 'Likely cause: wrong --arch' in err and 'blocks per stage (1, 1, 1)' in err
  assert not os.path.exists(wd)
  rc, _, err = _cli(capsys, 'import-torch', '--arch', 'wrn_16_1', '--checkpoint', ckpt,
                    '--dataset', 'digits', '--workdir', wd)
  assert rc == 2 and '40 checkpoint tensors are unused: layer1.0.conv1.weight' in err
  assert '62 wrn_16_1 variables have no tensor' in err
  assert 'bn1.weight: checkpoint (16,) vs wrn_16_1 (64,)' in err
  assert not os.path.exists(wd)
  ckpt7 = str(tmp_path / 'r8_7.pth')
  _save_digits_net('resnet8', ckpt7, num_classes=7)
  rc, _, err = _cli(capsys, 'import-torch', '--arch', 'resnet8', '--checkpoint', ckpt7,
                    '--dataset', 'digits', '--workdir', wd)
  assert rc == 2 and 'fc.weight: checkpoint (7, 64) vs resnet8 (10, 64)' in err
  assert 'Likely cause: the class count. The checkpoint has 7 classes' in err
  assert not os.path.exists(wd)
  rc, _, err = _cli(capsys, 'import-torch', '--arch', 'resnet8', '--checkpoint', ckpt7,
                    '--dataset', 'digits', '--workdir', wd, '--num_classes', '7')
  assert rc == 2 and 'digits has 10 classes' in err and not os.path.exists(wd)


@pytest.fixture(scope='module')
def imported(tmp_path_factory):
  """A random torch resnet20 for digits, saved RepDistiller-style and imported by the CLI."""
  tmp = tmp_path_factory.mktemp('imported')
  ckpt = str(tmp / 'ckpt_epoch_240.pth')
  net = _save_digits_net('resnet20', ckpt, seed=3)
  wd = str(tmp / 'teacher_resnet20')
  assert main.run(['import-torch', '--arch', 'resnet20', '--checkpoint', ckpt, '--dataset', 'digits',
                   '--workdir', wd]) == 0
  with open(os.path.join(wd, 'results.json')) as f:
    res = json.load(f)
  return net, wd, res


def _digits_test():
  (_, _), (x_test, y_test) = digits.arrays()
  x = (x_test.astype(np.float32) / 255.0 - np.float32(digits.MEAN[0])) / np.float32(digits.STD[0])
  return x.astype(np.float32), y_test


def test_imported_teacher_reports_the_torch_accuracy_and_loads_as_teacher(imported):
  net, wd, res = imported
  x, y = _digits_test()
  with torch.no_grad():
    t_logits, _ = net(torch.from_numpy(x.transpose(0, 3, 1, 2)))
  torch_top1 = float((t_logits.argmax(1).numpy() == y).mean())
  assert res['final']['top1'] == pytest.approx(torch_top1, abs=1.5 / len(y))
  assert res['model'] == 'resnet20' and len(res['source_sha256']) == 64
  assert res['source_tensors'] == 47 + 2 * 3 * 10  # resnet8's 47 plus 6 more basic blocks
  cfg = recipes.student('digits', 'resnet20', 'resnet8', recipes.kd_terms(), ce_weight=0.1)
  cfg.teacher.checkpoint = wd
  teacher = setup_lib.load_teacher(cfg, data_lib.load(cfg.data))
  assert teacher.arch == 'resnet20' and teacher.hash == res['hash']


def test_imported_workdir_evaluates_and_exports_back_to_the_same_tensors(imported, tmp_path, capsys):
  net, wd, res = imported
  rc, out, _ = _cli(capsys, 'eval', '--workdir', wd)
  assert rc == 0 and json.loads(out)['top1'] == res['final']['top1']
  exported = str(tmp_path / 'back.pth')
  rc, out, _ = _cli(capsys, 'export', '--workdir', wd, '--output', exported, '--format', 'torch')
  assert rc == 0 and json.loads(out)['family'] == 'rd_resnet'
  back = torch.load(exported, weights_only=True)
  assert set(back) == set(net.state_dict())
  for k, v in net.state_dict().items():
    if not k.endswith('num_batches_tracked'):
      assert torch.equal(back[k], v), k
  rc, _, err = _cli(capsys, 'import-torch', '--arch', 'resnet20', '--checkpoint', exported,
                    '--dataset', 'digits', '--workdir', wd)
  assert rc == 2 and 'already holds checkpoints' in err


@pytest.mark.slow
def test_kd_from_imported_teacher_resumes_evaluates_and_exports(imported, tmp_path, capsys):
  _, wd, res = imported
  cfg = recipes.student('digits', 'resnet20', 'resnet8', recipes.kd_terms(), ce_weight=0.1)
  cfg.teacher.checkpoint = wd
  cfg.progress_bar = False
  cfg.epochs = 1
  cfg.optim.batch_size = 1437 // 2  # one epoch = 2 steps
  cfg.optim.warmup_epochs = 0.0
  swd = str(tmp_path / 'kd')
  assert loop.train_and_evaluate(cfg, swd, stop_after_steps=1) == {'interrupted': True, 'step': 1}
  final = loop.train_and_evaluate(cfg, swd)
  assert final['teacher'] == 'resnet20' and final['teacher_checkpoint_hash'] == res['hash']
  assert 0.0 <= final['final']['top1'] <= 1.0
  student_pth = str(tmp_path / 'student.pth')
  rc, _, _ = _cli(capsys, 'export', '--workdir', swd, '--output', student_pth, '--format', 'torch')
  assert rc == 0
  ref = build('resnet8', 10, in_ch=1).eval()
  ref.load_state_dict(torch.load(student_pth, weights_only=True), strict=True)
  _, variables = workdir_lib.read_student(swd)
  x, _ = _digits_test()
  j_logits, _ = models.create('resnet8', 10).apply(variables, x[:16], train=False)
  with torch.no_grad():
    r_logits, _ = ref(torch.from_numpy(x[:16].transpose(0, 3, 1, 2)))
  assert _rel(r_logits.numpy(), np.asarray(j_logits)) < 1e-4


def test_import_without_the_dataset_writes_a_teacher_and_says_why(tmp_path, monkeypatch):
  from kdjax.interop import api
  monkeypatch.setenv('TFDS_DATA_DIR', str(tmp_path / 'no_data'))
  ckpt = str(tmp_path / 'ckpt_epoch_240.pth')
  net = randomize(build('resnet8', 100))
  torch.save({'model': net.state_dict()}, ckpt)
  wd = str(tmp_path / 'teacher_resnet8')
  res = api.import_torch('resnet8', ckpt, 'cifar100', wd)
  assert res['final'] is None and "dataset 'cifar100' is not on this machine" in res['note']
  with open(os.path.join(wd, 'results.json')) as f:
    assert json.load(f)['note'] == res['note']
  cfg = recipes.student('cifar100', 'resnet8', 'resnet8', recipes.kd_terms(), ce_weight=0.1)
  cfg.teacher.checkpoint = wd
  teacher = setup_lib.load_teacher(cfg, workdir_lib._shape_only_dataset(cfg, 100))
  np.testing.assert_array_equal(teacher.variables['params']['layer3_0']['shortcut_conv']['kernel'],
                                net.state_dict()['layer3.0.downsample.0.weight'].numpy()
                                .transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(teacher.variables['batch_stats']['bn1']['var'],
                                net.state_dict()['bn1.running_var'].numpy())


def test_training_never_imports_torch():
  import subprocess
  import sys
  code = ('import sys; import kdjax.main, kdjax.train.loop, kdjax.interop.api; '
          'assert "torch" not in sys.modules, "torch imported"')
  subprocess.run([sys.executable, '-c', code], check=True, env={**os.environ})


def test_pickled_objects_need_trust_checkpoint(tmp_path):
  import argparse
  path = str(tmp_path / 'ckpt.pth')
  torch.save({'model': _tiny_sd(), 'opt': argparse.Namespace(lr=0.05)}, path)
  with pytest.raises(ValueError, match='--trust_checkpoint'):
    torch_io.load_state_dict(path)
  assert list(torch_io.load_state_dict(path, trust=True)) == ['conv1.weight', 'bn1.weight']


def test_parity_detects_blocks_swapped_with_matching_shapes():
  # What a mapping by position in JAX's sorted tree would do: blocks of equal shapes trade places.
  net = randomize(build('resnet14', 10))
  sd = torch_io.unwrap(net.state_dict())
  swapped = {k.replace('layer1.0.', 'layer1.X.').replace('layer1.1.', 'layer1.0.')
             .replace('layer1.X.', 'layer1.1.'): v for k, v in sd.items()}
  x = np.random.RandomState(1).randn(2, 16, 16, 3).astype(np.float32)
  model = models.create('resnet14', 10)
  good = np.asarray(model.apply(torch_io.to_variables('resnet14', sd, 10, (16, 16, 3)), x)[0])
  bad = np.asarray(model.apply(torch_io.to_variables('resnet14', swapped, 10, (16, 16, 3)), x)[0])
  with torch.no_grad():
    ref = net(torch.from_numpy(x.transpose(0, 3, 1, 2)))[0].numpy()
  assert _rel(ref, good) < 1e-4 and _rel(ref, bad) > 1e-2
