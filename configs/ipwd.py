"""IPWD (Niu et al. 2022): inverse-probability-weighted distillation, appendix Tables 1, 3, 4, the
one-stage PS-KD setting and ImageNet (WSLD protocol).

  kdjax config list ipwd
  kdjax train --config configs/rd_cifar100.py:arch=resnet32x4 --workdir runs/cifar100/teacher_resnet32x4
  kdjax train --config configs/ipwd.py:teacher=resnet32x4,student=resnet8x4 --workdir runs/cifar100/ipwd/ipwd_resnet32x4_resnet8x4
  ...:teacher=resnet32x4,student=resnet8x4,star      IPWD*: the CE-aware output from a second student
  ...:teacher=resnet32x4,student=resnet8x4,dagger    IPWD-dagger: propensity from an extra plain-KD head
  ...:method=kd_la,teacher=resnet32x4,student=resnet8x4              KD + logit adjustment (appendix 2.3)
  ...:method=reviewkd_ipwd,teacher=resnet56,student=resnet20         ReviewKD + IPWD (appendix Table 2)
  kdjax train --config configs/ipwd.py:method=pskd,student=resnet18_cifar --workdir runs/cifar100/ipwd/pskd_resnet18_cifar
  kdjax train --config configs/ipwd.py:data=imagenet2012,method=wsld,teacher=resnet34,student=resnet18 \
      --workdir runs/imagenet2012/ipwd/wsld_resnet34_resnet18

Two-stage IPWD (CRD protocol and teachers, `configs/rd_cifar100.py`): 0.1 CE + CE(extra head) +
0.9 w tau^2 KL (tau 4); w = clip(1/pi, 1, w_max=10) normalised to batch mean 1, pi =
sigmoid(log p_kd(y) - log p_cls(y)) (estimator prob_ratio; ce_ratio also). The KD and WSLD rows
are `rd_cifar100`'s kd / wsld cells. Options: estimator, warmup (epochs before weighting), w_max,
alpha, temperature.
Appendix Table 2 (method=reviewkd / reviewkd_ipwd, CE 1, official ReviewKD weights, 20-epoch
warm-up; +IPWD weights each sample's HCL, `estimator` and `w_max` apply) and appendix 2.3
(method=kd_la: 0.1 CE + 0.9 KD with the student logits shifted by log(class prior), tau 4).
One-stage setting (PS-KD recipe: 300 epochs, Nesterov, lr 0.1 /10 at 150, 225, wd 5e-4, batch
128): pskd (alpha_T 0.8; `baseline` = plain CE) and ipwd_pskd (IPWD with PS-KD's progressive
target as teacher distribution, alpha 1, tau 1).
"""

from __future__ import annotations

from configs import common, imagenet, rd_cifar100

TABLE1_PAIRS = (('wrn_40_2', 'wrn_16_2'), ('resnet110', 'resnet20'), ('resnet32x4', 'shufflenetv2'),
                ('vgg13', 'mobilenetv2'))
TABLE3_PAIRS = (('resnet110', 'resnet32'), ('resnet32x4', 'resnet8x4'),
                ('resnet32x4', 'shufflenetv1'), ('resnet32x4', 'shufflenetv2'))  # also Table 4
PAIRS = TABLE1_PAIRS + tuple(p for p in TABLE3_PAIRS if p not in TABLE1_PAIRS)
ONE_STAGE = ('pskd', 'ipwd_pskd')
# ImageNet under the WSLD protocol (100 epochs, batch 256, lr 0.1 /10 every 30, Nesterov, wd 1e-4;
# teachers: configs/imagenet.py:arch=...). WSLD's official alpha 2.5, tau 2; KD the same without
# the weights; IPWD's ImageNet constants are not given: its CIFAR alpha 0.9 and 0.1 CE at WSLD's
# tau 2 [assumed].
IMAGENET_PAIRS = (('resnet34', 'resnet18'), ('resnet50', 'mobilenetv1'))
IMAGENET = {
    'kd': (1.0, {'kd': dict(method='kd', weight=2.5, temperature=2.0)}),
    'wsld': (1.0, {'wsld': dict(method='wsld', weight=2.5, temperature=2.0)}),
    'ipwd': (0.1, {'ipwd': dict(method='ipwd', alpha=0.9, temperature=2.0)}),
}
ONE_STAGE_ARCHS = ('resnet18_cifar',)
# Appendix Table 2: ReviewKD and ReviewKD + IPWD (the IPWD weights on each sample's HCL, extra CE
# head as IPWD's). Weights from the official ReviewKD script (script/reviewKD.sh), CE 1, 20-epoch
# warm-up; the +IPWD row adds ipw=True with IPWD's defaults (prob_ratio, w in [1, 10]).
REVIEWKD = {('wrn_40_2', 'wrn_16_2'): 5.0, ('resnet56', 'resnet20'): 0.6,
            ('resnet110', 'resnet32'): 1.0, ('resnet32x4', 'shufflenetv2'): 8.0,
            ('wrn_40_2', 'shufflenetv1'): 5.0}
REVIEWKD_METHODS = ('reviewkd', 'reviewkd_ipwd')
# Appendix 2.3: KD + logit adjustment (kd's logit_adjust_tau, prior from the training labels),
# RD's KD constants (0.1 CE, 0.9 KD, tau 4), on the pairs of Tables 1 and 3.
KD_LA = (0.1, {'kd': dict(method='kd', weight=0.9, temperature=4.0, logit_adjust_tau=1.0)})


def _parse(arg):
  return common.parse_arg(arg, data='cifar100', method='ipwd', teacher='resnet32x4', student='resnet8x4', star=False,
                          dagger=False, estimator='prob_ratio', warmup=0.0, w_max=10.0, alpha=0.9,
                          temperature=4.0, alpha_T=0.8, baseline=False)


def pskd_recipe(arch: str):
  return common.sgd(common.base('cifar100', arch), epochs=300, lr=0.1, batch=128, wd=5e-4,
                    boundaries=(150, 225), nesterov=True)


def wsld_imagenet(a):
  common.choose('method', a.method, IMAGENET)
  common.choose('teacher,student', (a.teacher, a.student), IMAGENET_PAIRS)
  c = common.with_teacher(common.imagenet(a.student), a.teacher, imagenet.teacher_dir(a.teacher))
  c.optim.nesterov = True
  return common.with_terms(c, *reversed(IMAGENET[a.method]))


def get_config(arg=None):
  a = _parse(arg)
  common.choose('data', a.data, ('cifar100', 'imagenet2012'))
  if a.data == 'imagenet2012':
    return wsld_imagenet(a)
  common.choose('method', a.method, ('ipwd', 'kd_la') + REVIEWKD_METHODS + ONE_STAGE)
  if a.method in REVIEWKD_METHODS:
    common.choose('teacher,student (ReviewKD, appendix Table 2)', (a.teacher, a.student),
                  REVIEWKD)
    c = common.with_teacher(common.rd_cifar100(a.student), a.teacher,
                            rd_cifar100.teacher_dir(a.teacher))
    term = dict(method='reviewkd', weight=REVIEWKD[(a.teacher, a.student)], warmup_epochs=20.0)
    if a.method == 'reviewkd_ipwd':
      term.update(ipw=True, ipw_estimator=a.estimator, ipw_w_max=a.w_max)
    return common.with_terms(c, {'reviewkd': term}, 1.0)
  if a.method in ONE_STAGE:
    common.choose('student', a.student, ONE_STAGE_ARCHS)
    c = pskd_recipe(a.student)
    if a.method == 'pskd':
      return c if a.baseline else common.with_terms(c, {'pskd': dict(method='pskd',
                                                                     alpha_T=a.alpha_T)}, 0.0)
    return common.with_terms(c, {'ipwd': dict(
        method='ipwd', teacher_source='pskd', alpha=1.0, temperature=1.0, alpha_T=a.alpha_T,
        estimator=a.estimator, warmup_epochs=a.warmup, w_max=a.w_max)}, 0.0)
  common.choose('teacher,student', (a.teacher, a.student), PAIRS)
  if a.star or a.dagger:
    common.choose('teacher,student (IPWD* / IPWD-dagger)', (a.teacher, a.student), TABLE3_PAIRS)
  c = common.with_teacher(common.rd_cifar100(a.student), a.teacher, rd_cifar100.teacher_dir(a.teacher))
  if a.method == 'kd_la':
    return common.with_terms(c, KD_LA[1], KD_LA[0])
  term = dict(method='ipwd', alpha=a.alpha, temperature=a.temperature, estimator=a.estimator,
              warmup_epochs=a.warmup, w_max=a.w_max)
  if a.star:
    c.model.cohort = (a.student, a.student)
    term.update(logits_feature='member0/logits', cls_feature='member1/logits')
  if a.dagger:
    term['dagger'] = True
  return common.with_terms(c, {'ipwd': term}, 0.1)


def workdir(arg):
  a = _parse(arg)
  if a.data == 'imagenet2012':
    return f'runs/imagenet2012/ipwd/{a.method}_{a.teacher}_{a.student}'
  if a.method in ONE_STAGE:
    return f'runs/cifar100/ipwd/{a.method}{"_baseline" if a.baseline else ""}_{a.student}'
  suffix = '_star' if a.star else '_dagger' if a.dagger else ''
  return f'runs/cifar100/ipwd/{a.method}{suffix}_{a.teacher}_{a.student}'


def cells():
  out = [f'teacher={t},student={s}' for t, s in PAIRS]
  out += [f'teacher={t},student={s},{o}' for o in ('star', 'dagger') for t, s in TABLE3_PAIRS]
  out += [f'method=kd_la,teacher={t},student={s}' for t, s in PAIRS]
  out += [f'method={m},teacher={t},student={s}' for m in REVIEWKD_METHODS for t, s in REVIEWKD]
  out += [f'method={m},student={s}' for m in ONE_STAGE for s in ONE_STAGE_ARCHS]
  out += [f'method=pskd,student={s},baseline' for s in ONE_STAGE_ARCHS]
  return out + [f'data=imagenet2012,method={m},teacher={t},student={s}' for m in IMAGENET
                for t, s in IMAGENET_PAIRS]


REJECTED = {}
