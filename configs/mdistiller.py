"""mdistiller (Zhao et al., the DKD / DOT authors' codebase) settings no paper module covers.

  kdjax config list mdistiller
  kdjax train --config configs/imagenet.py:arch=resnet34 --workdir runs/imagenet2012/teacher_resnet34
  kdjax train --config configs/mdistiller.py:data=imagenet2012,method=reviewkd,teacher=resnet34,student=resnet18 \
      --workdir runs/imagenet2012/mdistiller/reviewkd_resnet34_resnet18

ReviewKD on ImageNet (mdistiller `configs/imagenet/r34_r18/reviewkd.yaml`,
`r50_mv1/reviewkd.yaml`): CE 1, ReviewKD weight 1.0 (ResNet-34 -> ResNet-18) or
8.0 (ResNet-50 -> MobileNetV1), warm-up 1 epoch, max mid channels 512, the
student's pre-ReLU stage outputs (STU_PREACT) and pooled vector against the
teacher's pre-ReLU stage outputs and pooled vector. Recipe (`common.imagenet`,
mdistiller's ImageNet solver): 100 epochs, batch 256, lr 0.1 /10 at 30/60/90,
wd 1e-4, momentum 0.9. Teachers: `configs/imagenet.py:arch=...`; CIFAR-100
teachers: `configs/rd_cifar100.py:arch=...`.

DOT (Zhao et al. 2023; mdistiller `configs/cifar100/dot/*.yaml`,
`configs/imagenet/*/dot.yaml`): KD trained with `optim.name='dot'` (separate
momenta 0.9 -/+ delta for the CE and KD gradients). CIFAR-100: delta 0.075,
KD tau 4 with CE 0.1 + KD 0.9, the RepDistiller recipe (240 epochs, batch 64,
lr 0.05, 0.01 for ShuffleNetV2, /10 at 150/180/210, wd 5e-4). ImageNet:
delta 0.09, KD tau 1 with CE 0.5 + KD 0.5, batch 512, lr 0.2, 100 epochs /10
at 30/60/90, wd 1e-4.
"""

from __future__ import annotations

from configs import common, imagenet, rd_cifar100

_STU_PREACT = tuple(f'stage{i}_preact' for i in range(1, 5)) + ('pooled',)


def _reviewkd_imagenet(weight: float) -> tuple[float, dict]:
  return 1.0, {'reviewkd': dict(method='reviewkd', weight=weight, warmup_epochs=1.0,
                                student_features=_STU_PREACT)}


# (data, method) -> {(teacher, student): (ce_weight, terms)}.
TABLE = {
    ('imagenet2012', 'reviewkd'): {
        ('resnet34', 'resnet18'): _reviewkd_imagenet(1.0),
        ('resnet50', 'mobilenetv1'): _reviewkd_imagenet(8.0),
    },
}
def _kd(ce: float, weight: float, temperature: float) -> tuple[float, dict]:
  return ce, {'kd': dict(method='kd', weight=weight, temperature=temperature)}


TABLE[('cifar100', 'dot')] = {p: _kd(0.1, 0.9, 4.0) for p in (
    ('resnet32x4', 'resnet8x4'), ('resnet32x4', 'shufflenetv2'), ('vgg13', 'vgg8'))}
TABLE[('imagenet2012', 'dot')] = {p: _kd(0.5, 0.5, 1.0) for p in (
    ('resnet34', 'resnet18'), ('resnet50', 'mobilenetv1'))}
# data -> optimizer settings of the DOT cells (on top of the data's recipe).
DOT_OPTIM = {'cifar100': dict(name='dot', dot_delta=0.075),
             'imagenet2012': dict(name='dot', dot_delta=0.09, batch_size=512, lr=0.2)}
RECIPES = {'imagenet2012': common.imagenet, 'cifar100': common.rd_cifar100}
TEACHER_DIRS = {'imagenet2012': imagenet.teacher_dir, 'cifar100': rd_cifar100.teacher_dir}


def _parse(arg):
  return common.parse_arg(arg, data='imagenet2012', method='reviewkd', teacher='resnet34',
                          student='resnet18')


def get_config(arg=None):
  a = _parse(arg)
  common.choose('data', a.data, sorted({d for d, _ in TABLE}))
  common.choose('method', a.method, [m for d, m in TABLE if d == a.data])
  pairs = TABLE[(a.data, a.method)]
  common.choose('teacher,student', (a.teacher, a.student), pairs)
  ce, terms = pairs[(a.teacher, a.student)]
  c = common.with_teacher(RECIPES[a.data](a.student), a.teacher,
                          TEACHER_DIRS[a.data](a.teacher))
  if a.method == 'dot':
    c.optim.update(DOT_OPTIM[a.data])
  # mdistiller's CIFAR-100 train loader (DataLoader, drop_last=False) keeps the last partial
  # batch; its ImageNet loader is streamed here in full batches.
  c.data.drop_remainder = a.data != 'cifar100'
  return common.with_terms(c, terms, ce)


def workdir(arg):
  a = _parse(arg)
  return f'runs/{a.data}/mdistiller/{a.method}_{a.teacher}_{a.student}'


def cells():
  return [f'data={d},method={m},teacher={t},student={s}'
          for (d, m), pairs in TABLE.items() for t, s in pairs]


REJECTED = {}
