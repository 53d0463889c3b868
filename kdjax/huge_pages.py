"""The `kdjax` command runs with its heap on transparent huge pages (Linux, glibc).

Why. XLA:CPU allocates an executable's temporaries afresh at every execution,
and glibc serves blocks over 32 MiB (and thread-arena heaps it frees) with new
mappings, which the kernel zeroes page by page on first touch. On the 2-core
machine of `benchmarks/README.md` a train step took 80,000-140,000 minor page
faults and 0.2-0.4 s of system time. With glibc's `glibc.malloc.hugetlb=1`
tunable, malloc asks the kernel for 2 MiB transparent huge pages: a few
hundred to a few thousand faults per step. `kdjax bench`, batch 64, median ms
per step in alternating processes, 4 KiB pages -> huge pages: mobilenetv2
231-319 -> 91-139, wrn_40_2 1264-1470 -> 1021-1177, the resnet32x4 ->
resnet8x4 KD step 1560-1694 -> 1559-1688 and one 2092 (no gain: its page
faults did not hold up the step). Small jobs lose a little: the digits
quickstart took 49-56 s against 47-52 s (3 alternations). Keeping freed memory mapped instead (no mmap, no trim, one
arena) was slower than huge pages for both students.

How. glibc reads GLIBC_TUNABLES once, when the process starts, so the CLI
(`kdjax.main.run`) re-executes itself, the same command line in the same
process (os.execve keeps the PID), with the tunable added. Nothing changes
  * off Linux, or on a C library other than glibc >= 2.35 (no such tunable);
  * where the kernel's transparent huge pages are not in 'madvise' mode
    ('always' already gives them, 'never' forbids them);
  * where GLIBC_TUNABLES already sets glibc.malloc.hugetlb (the user's choice,
    or the re-executed process itself), or KDJAX_HUGE_PAGES=0.
A program that imports kdjax as a library can start Python with
GLIBC_TUNABLES=glibc.malloc.hugetlb=1 itself.
"""

from __future__ import annotations

import os
import sys
from typing import Mapping

TUNABLE = 'glibc.malloc.hugetlb'
VALUE = f'{TUNABLE}=1'
OPT_OUT = 'KDJAX_HUGE_PAGES'
THP_MODE = '/sys/kernel/mm/transparent_hugepage/enabled'


def environ_for_huge_pages(environ: Mapping[str, str] | None = None, *, platform: str | None = None,
                           glibc: tuple[int, int] | None = None,
                           thp_mode: str | None = None) -> dict[str, str] | None:
  """The environment to re-run this process in, or None where nothing would change."""
  env = os.environ if environ is None else environ
  platform = sys.platform if platform is None else platform
  if platform != 'linux' or env.get(OPT_OUT) == '0':
    return None
  tunables = env.get('GLIBC_TUNABLES', '')
  if TUNABLE in tunables:
    return None
  glibc = _glibc_version() if glibc is None else glibc
  thp_mode = _thp_mode() if thp_mode is None else thp_mode
  if glibc < (2, 35) or thp_mode != 'madvise':
    return None
  return {**env, 'GLIBC_TUNABLES': f'{tunables}:{VALUE}' if tunables else VALUE}


def reexec() -> None:
  """Re-executes this process's command line with huge pages, where that changes anything."""
  env = environ_for_huge_pages()
  if env is None:
    return
  sys.stdout.flush()
  sys.stderr.flush()
  try:
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
  except OSError:  # no usable interpreter path: run on without huge pages
    pass


def status() -> str:
  """'on' when this process's heap uses transparent huge pages, else 'off (why)'."""
  if sys.platform != 'linux':
    return 'off (not Linux)'
  if VALUE in os.environ.get('GLIBC_TUNABLES', '') and _glibc_version() >= (2, 35):
    return 'on' if _thp_mode() in ('madvise', 'always') else f'off (kernel THP {_thp_mode()})'
  if _thp_mode() == 'always':
    return 'on (kernel THP always)'
  return f'off (GLIBC_TUNABLES={VALUE} not set; kdjax/huge_pages.py)'


def _glibc_version() -> tuple[int, int]:
  try:
    name, version = os.confstr('CS_GNU_LIBC_VERSION').split()   # 'glibc 2.36'
    major, minor = version.split('.')[:2]
    return (int(major), int(minor)) if name == 'glibc' else (0, 0)
  except (AttributeError, OSError, ValueError):
    return (0, 0)


def _thp_mode() -> str:
  """The kernel's transparent-huge-page mode, the bracketed word of THP_MODE ('' if unknown)."""
  try:
    with open(THP_MODE) as f:
      text = f.read()
  except OSError:
    return ''
  start, end = text.find('['), text.find(']')
  return text[start + 1:end] if 0 <= start < end else ''
