"""The `kdjax` command line: user errors are one clear line, bench prints throughput."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def kdjax(*args, timeout=600):
  return subprocess.run([sys.executable, '-m', 'kdjax.main', *args], cwd=ROOT, capture_output=True,
                        text=True, timeout=timeout)


def test_methods_lists_kd():
  out = kdjax('methods')
  assert out.returncode == 0, out.stderr
  assert any(line.split()[0] == 'kd' for line in out.stdout.splitlines())


def test_unknown_config_key_is_rejected(tmp_path):
  out = kdjax('train', '--config', 'configs/digits/teacher_resnet8.py', '--workdir', str(tmp_path),
              '--config.optim.lr_rate=0.1')
  assert out.returncode == 2
  assert "unknown config key 'optim.lr_rate'" in out.stderr and 'optim.lr' in out.stderr
  assert 'Traceback' not in out.stderr


def test_unknown_architecture_is_rejected(tmp_path):
  out = kdjax('train', '--config', 'configs/digits/teacher_resnet8.py', '--workdir', str(tmp_path),
              '--config.model.name=resnet9')
  assert out.returncode == 2 and 'resnet9' in out.stderr and 'resnet8' in out.stderr


@pytest.mark.slow
def test_bench_prints_machine_readable_throughput():
  out = kdjax('bench', '--config', 'configs/digits/kd_resnet20_resnet8.py', '--steps', '3')
  assert out.returncode == 0, out.stderr[-2000:]
  last = out.stdout.strip().splitlines()[-1]
  assert last.startswith('images_per_sec=') and float(last.split('=')[1]) > 0
  assert 'teacher forward' in out.stdout


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_the_run_resumes(tmp_path):
  import signal
  import time
  wd = str(tmp_path / 'run')
  cmd = [sys.executable, '-m', 'kdjax.main', 'train', '--config', 'configs/digits/teacher_resnet8.py',
         '--workdir', wd, '--config.epochs=200', '--config.checkpoint_every_epochs=1000',
         '--config.progress_bar=False', '--config.eval_every_epochs=1000']
  proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  # Wait until training is under way (the first metrics record), then SIGTERM.
  deadline = time.time() + 300
  while time.time() < deadline and not os.path.exists(os.path.join(wd, 'metrics.jsonl')):
    time.sleep(0.5)
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=300)
  assert proc.returncode == 143, out[-2000:]
  assert 'checkpoint saved' in out
  steps = [int(d) for d in os.listdir(os.path.join(wd, 'checkpoints')) if d.isdigit()]
  assert steps and 0 < max(steps) < 200 * 22
