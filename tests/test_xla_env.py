"""kdjax/xla_env.py: CPU convolutions routed away from YNNPACK, unless the user says otherwise."""

import os

import jax
import jax.numpy as jnp
import pytest
from jax import lax

from kdjax import xla_env

OPT = f'--{xla_env.OPTION}={xla_env.VALUE}'


def test_apply_appends_the_option_to_existing_flags():
  env = {'XLA_FLAGS': '--xla_force_host_platform_device_count=8'}
  assert xla_env.apply(env, jaxlib_version='0.10.2')
  assert env['XLA_FLAGS'] == f'--xla_force_host_platform_device_count=8 {OPT}'
  assert not xla_env.apply(env, jaxlib_version='0.10.2')  # idempotent
  assert env['XLA_FLAGS'].count(xla_env.OPTION) == 1
  empty = {}
  assert xla_env.apply(empty, jaxlib_version='0.10.2') and empty['XLA_FLAGS'] == OPT


def test_only_a_jaxlib_known_to_have_the_option_gets_it():
  # XLA aborts the process on an unknown flag, so an untested jaxlib keeps XLA's default...
  env = {}
  assert not xla_env.apply(env, jaxlib_version='0.11.0') and 'XLA_FLAGS' not in env
  assert not xla_env.apply(env, jaxlib_version='') and 'XLA_FLAGS' not in env
  assert xla_env.apply(env, jaxlib_version='0.10.7') and env['XLA_FLAGS'] == OPT
  # ...unless the user asks for the option explicitly.
  env = {xla_env.OPT_OUT: '0'}
  assert xla_env.apply(env, jaxlib_version='0.11.0') and env['XLA_FLAGS'] == OPT


def test_user_choice_and_opt_out_win():
  mine = f'--{xla_env.OPTION}=LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION'
  env = {'XLA_FLAGS': mine}
  assert not xla_env.apply(env) and env['XLA_FLAGS'] == mine
  env = {xla_env.OPT_OUT: '1'}
  assert not xla_env.apply(env) and 'XLA_FLAGS' not in env


def test_importing_kdjax_after_jax_started_warns(tmp_path):
  import subprocess
  import sys
  code = ('import warnings, jax; jax.devices()\n'
          'with warnings.catch_warnings(record=True) as w:\n'
          '  warnings.simplefilter("always"); import kdjax\n'
          'print(any("after JAX started" in str(x.message) for x in w))')
  env = {k: v for k, v in os.environ.items() if k not in ('XLA_FLAGS', xla_env.OPT_OUT)}
  out = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True,
                       check=True, cwd=tmp_path)
  assert out.stdout.strip() == 'True'


def test_cpu_convolutions_reads_this_process_flags(monkeypatch):
  monkeypatch.setenv('XLA_FLAGS', OPT)
  assert xla_env.cpu_convolutions() == 'eigen'
  monkeypatch.setenv('XLA_FLAGS', f'--{xla_env.OPTION}=LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION')
  assert xla_env.cpu_convolutions() == 'ynnpack'
  monkeypatch.delenv('XLA_FLAGS')
  assert xla_env.cpu_convolutions() == 'ynnpack'


@pytest.mark.skipif(jax.default_backend() != 'cpu', reason='a CPU compilation option')
def test_importing_kdjax_took_effect_in_this_process():
  """The first-stage convolution (64 -> 64 channels) compiles outside any YNNPACK fusion."""
  if os.environ.get(xla_env.OPT_OUT) == '1':
    pytest.skip(f'{xla_env.OPT_OUT}=1')
  assert xla_env.OPTION in os.environ['XLA_FLAGS']
  conv = jax.jit(lambda x, w: jnp.maximum(lax.conv_general_dilated(
      x, w, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC')), 0.0))
  hlo = conv.lower(jnp.zeros((2, 8, 8, 64)), jnp.zeros((3, 3, 64, 64))).compile().as_text()
  assert ' convolution(' in hlo
  ynn_computations = {line.split('calls=%')[1].split(',')[0].split(' ')[0]
                      for line in hlo.splitlines() if '__ynn_fusion' in line and 'calls=%' in line}
  body = {}
  name = None
  for line in hlo.splitlines():
    if line and not line.startswith(' ') and line.endswith('{'):
      name = line.split(' ')[0].lstrip('%')
    elif name:
      body.setdefault(name, []).append(line)
  assert not any(' convolution(' in l for c in ynn_computations for l in body.get(c, []))
