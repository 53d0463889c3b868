"""The embedded 8x8 digits set (sklearn, no download): the quickstart and smoke tests.

  kdjax train --config configs/digits.py:arch=resnet20 --workdir runs/digits/teacher_resnet20
  kdjax train --config configs/digits.py:method=kd,teacher=resnet20,student=resnet8 \
      --workdir runs/digits/kd_resnet20_resnet8

Recipe (`common.digits`): 15 epochs, batch 64, lr 0.05 cosine with 1 warm-up epoch, wd 5e-4,
one-pixel crop jitter, no flip. The written-out files `configs/digits/teacher_resnet20.py`,
`teacher_resnet8.py` and `kd_resnet20_resnet8.py` are the same cells.
"""

from __future__ import annotations

from configs import common

ARCHS = ('resnet8', 'resnet20')
PAIRS = (('resnet20', 'resnet8'),)
METHODS = {'kd': (0.1, common.KD)}


def _parse(arg):
  return common.parse_arg(arg, method='kd', teacher='resnet20', student='resnet8', arch='')


def teacher_dir(arch: str) -> str:
  return f'runs/digits/teacher_{arch}'


def get_config(arg=None):
  a = _parse(arg)
  if a.arch:
    common.choose('arch', a.arch, ARCHS)
    return common.digits(a.arch)
  common.choose('method', a.method, METHODS)
  common.choose('teacher,student', (a.teacher, a.student), PAIRS)
  c = common.with_teacher(common.digits(a.student), a.teacher, teacher_dir(a.teacher))
  ce, terms = METHODS[a.method]
  return common.with_terms(c, terms, ce)


def workdir(arg):
  a = _parse(arg)
  return teacher_dir(a.arch) if a.arch else f'runs/digits/{a.method}_{a.teacher}_{a.student}'


def cells():
  return [f'arch={x}' for x in ARCHS] + [f'method={m},teacher={t},student={s}'
                                         for m in METHODS for t, s in PAIRS]


REJECTED = {}
