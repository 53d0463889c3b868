"""kdjax/huge_pages.py: the CLI re-runs itself with glibc's heap on transparent huge pages."""

import os
import subprocess
import sys

import pytest

from kdjax import huge_pages

LINUX = dict(platform='linux', glibc=(2, 36), thp_mode='madvise')


def test_the_tunable_is_added_where_it_changes_something():
  assert huge_pages.environ_for_huge_pages({'A': '1'}, **LINUX) == {
      'A': '1', 'GLIBC_TUNABLES': 'glibc.malloc.hugetlb=1'}
  # Other tunables are kept.
  env = huge_pages.environ_for_huge_pages({'GLIBC_TUNABLES': 'glibc.malloc.arena_max=2'}, **LINUX)
  assert env['GLIBC_TUNABLES'] == 'glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1'


def test_nothing_changes_where_it_would_not_help_or_the_user_chose():
  env = {}
  assert huge_pages.environ_for_huge_pages(env, **{**LINUX, 'platform': 'darwin'}) is None
  assert huge_pages.environ_for_huge_pages(env, **{**LINUX, 'glibc': (2, 31)}) is None  # no tunable
  assert huge_pages.environ_for_huge_pages(env, **{**LINUX, 'glibc': (0, 0)}) is None   # not glibc
  assert huge_pages.environ_for_huge_pages(env, **{**LINUX, 'thp_mode': 'always'}) is None
  assert huge_pages.environ_for_huge_pages(env, **{**LINUX, 'thp_mode': 'never'}) is None
  assert huge_pages.environ_for_huge_pages(env, **{**LINUX, 'thp_mode': ''}) is None
  assert huge_pages.environ_for_huge_pages({huge_pages.OPT_OUT: '0'}, **LINUX) is None
  # Set already (by the user, or this is the re-executed process): no second re-exec.
  assert huge_pages.environ_for_huge_pages({'GLIBC_TUNABLES': 'glibc.malloc.hugetlb=0'}, **LINUX) is None
  assert huge_pages.environ_for_huge_pages({'GLIBC_TUNABLES': 'glibc.malloc.hugetlb=1'}, **LINUX) is None


# Runs itself twice (before and after the re-exec); then counts the page faults of touching
# 256 MiB of fresh heap memory.
PROBE = r'''
import os, resource, sys
print('start', os.getpid(), sep='|', flush=True)
from kdjax import huge_pages
huge_pages.reexec()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
a = bytes(range(256)) * (1 << 20)   # malloc, then written (numpy would madvise on its own)
print('ran', os.getpid(), os.environ.get('GLIBC_TUNABLES', ''), huge_pages.status(),
      resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before, sep='|', flush=True)
'''


def _probe(**env):
  env = {**{k: v for k, v in os.environ.items() if k not in ('GLIBC_TUNABLES', huge_pages.OPT_OUT)},
         **env}
  out = subprocess.run([sys.executable, '-c', PROBE], env=env, capture_output=True, text=True,
                       check=True, timeout=120)
  return [line.split('|') for line in out.stdout.splitlines()]


@pytest.mark.skipif(huge_pages.environ_for_huge_pages({}) is None,
                    reason='no glibc >= 2.35 with kernel THP in madvise mode')
def test_reexec_keeps_the_process_and_puts_the_heap_on_huge_pages():
  (s1, pid1), (s2, pid2), (ran, pid3, tunables, status, faults) = _probe()
  assert (s1, s2, ran) == ('start', 'start', 'ran') and pid1 == pid2 == pid3  # execve: same PID
  assert tunables == huge_pages.VALUE and status == 'on'
  (s, _), (ran, _, tunables, status, faults_4k) = _probe(**{huge_pages.OPT_OUT: '0'})
  assert ran == 'ran' and tunables == '' and status.startswith('off')
  # 256 MiB: 65536 faults on 4 KiB pages; 2 MiB pages need 128 (plus the interpreter's own).
  assert int(faults_4k) > 60000 and int(faults) < int(faults_4k) // 4, (faults, faults_4k)
