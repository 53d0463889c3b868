"""SRRL (Yang et al. 2021): softmax regression representation learning, Tables 1, 2, 5-7, 9-12.

  kdjax config list srrl
  kdjax train --config configs/srrl.py:data=cifar100,arch=wrn_40_4 --workdir runs/cifar100/srrl/teacher_wrn_40_4
  kdjax train --config configs/srrl.py:data=cifar100,teacher=wrn_40_4,student=wrn_16_4 \
      --workdir runs/cifar100/srrl/srrl_wrn_40_4_wrn_16_4
  # Table 1 (ablation at conv4, and at earlier layers), Table 9 (L_SR loss), Table 10 (+KD, +AT)
  ...:data=cifar100,teacher=wrn_40_4,student=wrn_16_4,fm_only       (sr_only, layers=conv2+3+4)
  ...:data=cifar100,teacher=wrn_40_4,student=wrn_16_4,sr=kl         (mse | ce | kl)
  ...:data=cifar100,teacher=wrn_40_4,student=wrn_16_2,at            (kd)
  # baseline columns of Tables 5-7 (kd, at, ofd, rkd, crd) under the paper's recipes
  ...:data=cifar100,method=ofd,teacher=wrn_40_4,student=wrn_16_4
  ...:data=imagenet2012,method=crd,teacher=resnet50,student=mobilenetv1
  # Tables 11-12: the RepDistiller protocol and teachers (configs/rd_cifar100.py:arch=...)
  ...:protocol=crd,data=cifar100,teacher=resnet32x4,student=shufflenetv1
  # Table 8: real-to-binary (binary student alone: arch=binary_resnet34_cifar)
  ...:protocol=binary,data=cifar100,method=kd,teacher=resnet34_cifar,student=binary_resnet34_cifar

Loss: CE + alpha L_FM + beta L_SR (MSE through the frozen teacher head), alpha = beta = 1
(official; alpha 10 for ShuffleNetV1 students, SRD_ossl). `layers` (Table 1's last rows):
conv2 / conv3 / conv2+3+4 = WRN groups 1 / 2 / 1+2+3 (`stage1`, `stage2`, `last`).
Recipes (protocol=srrl): CIFAR-10 ResNets 350 epochs /10 at 150, 250, 320, WRNs 200 epochs
/5 at 60, 120, 160; CIFAR-100 200 epochs /10 at 100, 150; batch 128, lr 0.1, wd 5e-4;
ImageNet (Table 7) the CRD recipe (`common.imagenet`). Table 2's KD / AT / student rows are the
WRN-40-4 -> WRN-16-4 cells. The narrow ResNet-34 (1.4M) / 18 / 10 / 50 rows of Tables 5 and 6
are listed and fail with that reason; ResNet-34 -> ResNet-10 (4.95M) is `resnet10_cifar`.
Table 10's KD (weight 1, tau 4) and AT (weight 1000) weights are not given in the paper.
Table 8 (protocol=binary): binary XNOR-Net++ ResNet students (`binary_resnet34_cifar`,
`binary_resnet18`) trained with Adam, lr 0.002 /10 every 30 epochs, 100 epochs (A.1), batch and
data as the dataset's recipe; teachers are the real ResNet-34 (CIFAR-100, `resnet34_cifar`) and
ResNet-18 (ImageNet). Not stated in the paper, so chosen here: no weight decay for the binary
students (A.1 gives none for Adam), the column order (read as Table 6's: student, KD, AT, OFD, RKD,
CRD, ours, teacher; the extracted header is garbled) and the teachers being the standard real
ResNets (the text says teacher and student share the XNOR-Net++ ResNet layout; its teacher
accuracy, 75.08 on CIFAR-100, differs from Table 6's ResNet-34, 77.26).
"""

from __future__ import annotations

from configs import common, rd_cifar100

# (protocol, data) -> teacher -> student pairs. 'mobilenetv2_w1' = MobileNetV2 at width 1.0.
PAIRS = {
    ('srrl', 'cifar10'): (('wrn_16_2', 'wrn_16_1'), ('wrn_40_2', 'wrn_16_2'),   # Table 5
                          ('resnet26', 'resnet8'), ('resnet26', 'resnet14'), ('resnet26', 'wrn_16_1')),
    ('srrl', 'cifar100'): (('wrn_40_4', 'wrn_16_2'), ('wrn_40_4', 'wrn_16_4'),  # Tables 1, 6, 9, 10
                           ('wrn_16_10', 'wrn_10_10'), ('resnet34_cifar', 'wrn_16_2'),
                           ('resnet34_cifar', 'mobilenetv2_w1'), ('wrn_40_4', 'mobilenetv2_w1')),
    ('crd', 'cifar100'): rd_cifar100.PAIRS,                                       # Tables 11, 12
    ('srrl', 'imagenet2012'): (('resnet34', 'resnet18'), ('resnet50', 'mobilenetv1')),  # Table 7
    ('binary', 'cifar100'): (('resnet34_cifar', 'binary_resnet34_cifar'),),             # Table 8
    ('binary', 'imagenet2012'): (('resnet18', 'binary_resnet18'),),
}
PAIRS['srrl', 'cifar100'] += (('resnet34_cifar', 'resnet10_cifar'),)  # Table 6, 21.33M -> 4.95M
# Rows with narrow ResNets the paper does not define (only their parameter counts): listed,
# rejected with this reason.
NARROW = {
    ('srrl', 'cifar10'): (('resnet34_narrow', 'resnet18_narrow', '1.4M -> 0.7M'),),       # Table 5
    ('srrl', 'cifar100'): (('resnet34_narrow', 'resnet10_narrow', '1.39M -> 0.34M'),      # Table 6
                           ('resnet50_narrow', 'resnet18_narrow', '1.99M -> 0.75M')),
}
# Columns per table: the paper's baselines (RepDistiller weights; KD on ImageNet 0.5 CE + 0.9 KD
# as CRD; OFD's official weight, 1e-4 on ImageNet) and SRRL. The CRD-protocol tables' baselines
# are configs/rd_cifar100.py's cells.
COLUMNS = {('srrl', 'cifar10'): ('srrl', 'kd', 'at', 'ofd', 'rkd'),
           ('srrl', 'cifar100'): ('srrl', 'kd', 'at', 'ofd', 'rkd', 'crd'),
           ('srrl', 'imagenet2012'): ('srrl', 'kd', 'at', 'ofd', 'rkd', 'crd'),
           ('crd', 'cifar100'): ('srrl',),
           ('binary', 'cifar100'): ('srrl', 'kd', 'at', 'ofd', 'rkd', 'crd'),
           ('binary', 'imagenet2012'): ('srrl', 'kd', 'at', 'ofd', 'rkd', 'crd')}
# Hinton KD (0.1 CE + 0.9 KD, tau 4) on the CIFAR-10 recipe, pairs outside the paper's tables.
KD_PAIRS = (('resnet56', 'resnet20'), ('resnet110', 'resnet20'))
ARCH_KWARGS = {'mobilenetv2_w1': ('mobilenetv2', {'width_mult': 1.0})}
# Table 1 / 9 / 10 option cells, on the pairs they were reported for.
VARIANTS = {'wrn_40_4,student=wrn_16_4': ('fm_only', 'sr_only', 'layers=conv2', 'layers=conv3',
                                          'layers=conv2+3+4', 'sr=ce', 'sr=kl')}
_CONV = {'conv2': 'stage1', 'conv3': 'stage2', 'conv4': 'last'}


def layers(text: str) -> tuple[str, ...]:
  """'conv2' / 'conv3' / 'conv2+3+4' (Table 1) or 'stage1+last' -> the `srrl` layers option."""
  out = []
  for part in text.split('+'):
    part = part.strip()
    part = _CONV.get(f'conv{part}' if part.isdigit() else part, part)
    if part != 'last' and not (part.startswith('stage') and part[5:].isdigit()):
      raise ValueError(f'srrl layers: unknown position {part!r}; use conv2 / conv3 / conv4 '
                       f"(joined with '+', e.g. conv2+3+4), stageK or last.")
    out.append(part)
  return tuple(out)


def _parse(arg):
  a = common.parse_arg(arg, protocol='srrl', data='cifar100', method='srrl', teacher='wrn_40_4',
                       student='wrn_16_4', arch='', alpha=-1.0, beta=1.0, sr='mse', fm_only=False,
                       sr_only=False, kd=False, at=False, layers='')
  common.choose('protocol,data', (a.protocol, a.data), PAIRS)
  return a


def teacher_dir(a, arch: str) -> str:
  if a.protocol == 'crd':
    return rd_cifar100.teacher_dir(arch)
  return f'runs/{a.data}/srrl/teacher_{arch}'  # binary protocol: the same real teachers


def binary_adam(c):
  """SRRL A.1's binary-network optimizer: Adam lr 0.002, /10 every 30 epochs, 100 epochs."""
  c.epochs = 100
  c.optim.update(dict(name='adam', lr=0.002, weight_decay=0.0, schedule='piecewise',
                      boundaries_epochs=(30, 60, 90), decay_factor=0.1, warmup_epochs=0.0))
  return c


def recipe(a, arch: str):
  name, kwargs = ARCH_KWARGS.get(arch, (arch, {}))
  if a.protocol == 'crd':
    c = common.rd_cifar100(name)
  elif a.data == 'imagenet2012':
    c = common.imagenet(name)
  else:
    c = common.srrl_cifar10(name) if a.data == 'cifar10' else common.srrl_cifar100(name)
  if kwargs:
    with c.model.unlocked():
      c.model.kwargs = common.ConfigDict(kwargs)
  return binary_adam(c) if name.startswith('binary_') else c


def archs(protocol: str, data: str):
  pairs = PAIRS[protocol, data] + (KD_PAIRS if data == 'cifar10' else ())
  return sorted({x for p in pairs for x in p})


def get_config(arg=None):
  a = _parse(arg)
  if a.arch:
    if a.protocol == 'crd':
      raise ValueError('CRD-protocol teachers are the RepDistiller ones: '
                       f'configs/rd_cifar100.py:arch={a.arch}.')
    common.choose('arch', a.arch, archs(a.protocol, a.data))
    return recipe(a, a.arch)
  common.choose('method', a.method, COLUMNS[a.protocol, a.data])
  narrow = {(t, s): n for t, s, n in NARROW.get((a.protocol, a.data), ())}
  if (a.teacher, a.student) in narrow:
    raise ValueError(f'{a.teacher} -> {a.student} ({narrow[a.teacher, a.student]} parameters): '
                     'the paper does not define these narrow ResNets, so there is no network to '
                     'build.')
  pairs = PAIRS[a.protocol, a.data] + (KD_PAIRS if a.data == 'cifar10' else ())
  common.choose('teacher,student', (a.teacher, a.student), pairs + tuple(narrow))
  if a.method != 'srrl':
    c = rd_cifar100.distill(a.method, a.teacher, a.student, lambda x: recipe(a, x),
                            teacher_dir(a, a.teacher))
    if a.data == 'imagenet2012' and a.method == 'kd':
      c.distill.ce_weight = 0.5
    if a.data == 'imagenet2012' and a.method == 'ofd':
      c.distill.terms.ofd.weight = 1e-4
    return c
  c = common.with_teacher(recipe(a, a.student), a.teacher, teacher_dir(a, a.teacher))
  alpha = a.alpha if a.alpha >= 0 else (10.0 if a.student == 'shufflenetv1' else 1.0)
  term = dict(method='srrl', alpha=0.0 if a.sr_only else alpha, beta=0.0 if a.fm_only else a.beta,
              sr_loss=a.sr)
  if a.layers:
    term['layers'] = layers(a.layers)
  terms = {'srrl': term}
  if a.kd:
    terms['kd'] = dict(method='kd', weight=1.0, temperature=4.0)
  if a.at:  # stage lists of equal resolution where the stage counts differ (common.STAGE_MATCH)
    terms.update(common.match_stages({'at': dict(method='at', weight=1000.0)}, a.teacher, a.student))
  return common.with_terms(c, terms, 1.0)


def workdir(arg):
  a = _parse(arg)
  if a.arch:
    return teacher_dir(a, a.arch)
  extra = arg.split(f'student={a.student}', 1)[-1].strip(',').replace('=', '').replace(',', '_')
  folder = 'srrl_crd' if a.protocol == 'crd' else 'srrl'
  return f'runs/{a.data}/{folder}/{a.method}_{a.teacher}_{a.student}' + (f'_{extra}' if extra else '')


def cells():
  out = []
  for (p, d), pairs in PAIRS.items():
    head = f'protocol={p},data={d}'
    if p == 'srrl':
      out += [f'{head},arch={x}' for x in archs(p, d)]
    if p == 'binary':  # Table 8's student column (its real teachers are the srrl protocol's)
      out += [f'{head},arch={x}' for x in archs(p, d) if x.startswith('binary_')]
    for t, s in pairs + tuple((t, s) for t, s, _ in NARROW.get((p, d), ())):
      out.append(f'{head},teacher={t},student={s}')
      out += [f'{head},method={m},teacher={t},student={s}' for m in COLUMNS[p, d][1:]]
      for v in VARIANTS.get(f'{t},student={s}', ()):
        out.append(f'{head},teacher={t},student={s},{v}')
      if (p, d) == ('srrl', 'cifar100') and (t, s) in pairs:  # Table 10
        out += [f'{head},teacher={t},student={s},kd', f'{head},teacher={t},student={s},at']
  out += [f'protocol=srrl,data=cifar10,method=kd,teacher={t},student={s}' for t, s in KD_PAIRS]
  return out


REJECTED = {f'protocol={p},data={d}' + (f',method={m}' if m != 'srrl' else '') +
            f',teacher={t},student={s}': 'does not define these narrow ResNets'
            for (p, d), rows in NARROW.items() for t, s, _ in rows for m in COLUMNS[p, d]}
