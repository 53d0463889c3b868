#!/usr/bin/env python
"""Starts N kdjax processes on this machine as one multi-controller JAX job.

  python launch/local_multiprocess.py --processes 2 --devices 2 -- \
      train --config configs/digits/kd_resnet20_resnet8.py --workdir runs/mp

Each process gets KDJAX_DISTRIBUTED=1, a local coordinator (localhost, a free
port), its rank, and (on CPU) `--devices` virtual devices, and runs
`python -m kdjax.runtime ARGS` (= `kdjax ARGS` after jax.distributed.initialize).
With `--python` the arguments after `--` are a Python script and its arguments
instead (tests use this). Every process's output is prefixed with its rank;
the exit status is the first non-zero one (all processes are stopped then).

The pod and multi-GPU scripts (tpu_pod.sh, multi_gpu.sh) start processes with
the same entry point and environment, one per host or per GPU.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def process_env(rank: int, processes: int, port: int, devices: int | None, platform: str | None,
                base: dict | None = None, one_gpu_each: bool = False) -> dict:
  env = dict(os.environ if base is None else base)
  env.update(KDJAX_DISTRIBUTED='1', KDJAX_COORDINATOR=f'localhost:{port}',
             KDJAX_NUM_PROCESSES=str(processes), KDJAX_PROCESS_ID=str(rank))
  if platform:
    env['JAX_PLATFORMS'] = platform
  if one_gpu_each:  # process i drives GPU i (one process per GPU, as on a multi-node cluster)
    env['CUDA_VISIBLE_DEVICES'] = str(rank)
  if devices:
    flags = [f for f in env.get('XLA_FLAGS', '').split()
             if not f.startswith('--xla_force_host_platform_device_count')]
    env['XLA_FLAGS'] = ' '.join(flags + [f'--xla_force_host_platform_device_count={devices}'])
  # This checkout's kdjax first, so a worktree runs its own code.
  env['PYTHONPATH'] = os.pathsep.join(p for p in (REPO, env.get('PYTHONPATH', '')) if p)
  return env


def _pump(stream, prefix, sink):
  for line in iter(stream.readline, ''):
    sink.write(f'{prefix}{line}')
    sink.flush()


def launch(args: list[str], *, processes: int, devices: int | None = None, platform: str | None = 'cpu',
           python_script: bool = False, timeout: float | None = None, port: int | None = None,
           one_gpu_each: bool = False) -> int:
  """Runs the job; returns the first non-zero exit status (0 if all succeeded)."""
  if processes < 1:
    raise ValueError(f'--processes must be >= 1, got {processes}.')
  port = port or free_port()
  cmd = [sys.executable] + (list(args) if python_script else ['-m', 'kdjax.runtime'] + list(args))
  procs, pumps = [], []
  for rank in range(processes):
    p = subprocess.Popen(cmd, env=process_env(rank, processes, port, devices, platform,
                                                     one_gpu_each=one_gpu_each),
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    t = threading.Thread(target=_pump, args=(p.stdout, f'[{rank}] ', sys.stdout), daemon=True)
    t.start()
    procs.append(p)
    pumps.append(t)
  deadline = None if timeout is None else time.time() + timeout
  status = 0
  try:
    while any(p.poll() is None for p in procs):
      failed = [p.returncode for p in procs if p.returncode not in (None, 0)]
      if failed or (deadline is not None and time.time() > deadline):
        status = failed[0] if failed else 124
        break
      time.sleep(0.2)
  finally:
    for p in procs:  # one failed (or time is up): the others would wait on it forever
      if p.poll() is None:
        p.kill()
    for p in procs:
      p.wait()
    for t in pumps:
      t.join(timeout=5)
  return status or next((p.returncode for p in procs if p.returncode), 0)


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--processes', '-n', type=int, default=2)
  parser.add_argument('--devices', '-d', type=int, default=None,
                      help='virtual CPU devices per process (CPU only; GPUs/TPUs are real devices)')
  parser.add_argument('--platform', default='cpu', help="JAX_PLATFORMS for the processes ('' keeps it)")
  parser.add_argument('--one_gpu_each', action='store_true',
                      help='process i sees only GPU i (use with --platform cuda)')
  parser.add_argument('--python', action='store_true',
                      help='the arguments after -- are a Python script and its arguments')
  parser.add_argument('--timeout', type=float, default=None, help='seconds before every process is killed')
  parser.add_argument('args', nargs=argparse.REMAINDER)
  a = parser.parse_args()
  args = a.args[1:] if a.args[:1] == ['--'] else a.args
  if not args:
    parser.error('nothing to run: give kdjax arguments after --, e.g. -- train --config ... --workdir ...')
  return launch(args, processes=a.processes, devices=a.devices, platform=a.platform or None,
                python_script=a.python, timeout=a.timeout, one_gpu_each=a.one_gpu_each)


if __name__ == '__main__':
  sys.exit(main())
