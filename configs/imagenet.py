"""ImageNet (ILSVRC-2012) with the CRD / torchvision recipe: teachers and Hinton KD.

  kdjax config list imagenet
  kdjax train --config configs/imagenet.py:arch=resnet34 --workdir runs/imagenet2012/teacher_resnet34
  kdjax train --config configs/imagenet.py:method=kd,teacher=resnet34,student=resnet18 \
      --workdir runs/imagenet2012/kd_resnet34_resnet18

Recipe (`common.imagenet`): 100 epochs, batch 256, lr 0.1 /10 every 30, wd 1e-4, 224x224.
KD as CRD's ImageNet row: 0.5 CE + 0.9 KD, tau 4. The papers' own ImageNet tables are in
`ie_kd` (IE recipe), `srrl` (Table 7) and `ipwd` (WSLD protocol).
"""

from __future__ import annotations

from configs import common

ARCHS = ('resnet18', 'resnet34', 'resnet50', 'mobilenetv1')   # also the SRRL / IPWD teachers
PAIRS = (('resnet34', 'resnet18'),)
METHODS = {'kd': (0.5, common.KD)}


def teacher_dir(arch: str) -> str:
  return f'runs/imagenet2012/teacher_{arch}'


def _parse(arg):
  return common.parse_arg(arg, method='kd', teacher='resnet34', student='resnet18', arch='')


def get_config(arg=None):
  a = _parse(arg)
  if a.arch:
    common.choose('arch', a.arch, ARCHS)
    return common.imagenet(a.arch)
  common.choose('method', a.method, METHODS)
  common.choose('teacher,student', (a.teacher, a.student), PAIRS)
  c = common.with_teacher(common.imagenet(a.student), a.teacher, teacher_dir(a.teacher))
  ce, terms = METHODS[a.method]
  return common.with_terms(c, terms, ce)


def workdir(arg):
  a = _parse(arg)
  return teacher_dir(a.arch) if a.arch else f'runs/imagenet2012/{a.method}_{a.teacher}_{a.student}'


def cells():
  return [f'arch={x}' for x in ARCHS] + [f'method={m},teacher={t},student={s}'
                                         for m in METHODS for t, s in PAIRS]


REJECTED = {}
