"""Build-time argument validators shared by the method builders.

Synopsis:
  Every function raises ValueError with what is wrong and what to do, from
  shapes and hyper-parameters alone (`BuildInfo`), before anything compiles:

      checks.positive('kd', temperature=temperature)          numbers > 0
      checks.nonneg('dkd', alpha=alpha)                        numbers >= 0
      checks.check_logits(info)                                K classes, student = teacher
      checks.check_maps(info, 'at', s_keys, t_keys)            NHWC, poolable to each other
      checks.check_batched(info, 'sp', s_keys, t_keys)         rank >= 2
      ks, kt = checks.one_embedding(info, 'pkt', s, t)         one pooled vector each

Feature-name arguments are resolved by `api.resolve_features` /
`api.resolve_feature_pair` (a name, a list, or None for the default).
"""

from __future__ import annotations

from kdjax.distill.api import BuildInfo, resolve_feature_pair


def positive(method: str, **values):
  for k, v in values.items():
    if not (isinstance(v, (int, float)) and v > 0):
      raise ValueError(f'{method}: {k} must be a number > 0, got {v!r}.')


def nonneg(method: str, **values):
  for k, v in values.items():
    if not (isinstance(v, (int, float)) and v >= 0):
      raise ValueError(f'{method}: {k} must be a number >= 0, got {v!r}.')


def shape(info: BuildInfo, who: str, key: str) -> tuple[int, ...]:
  return tuple(info.feature(who, key).shape)


def last_stage(info: BuildInfo, who: str):
  """Default-feature callable: the last stage output (RD feat[-2])."""
  return lambda: info.stages(who)[-1:]


def require_maps(info: BuildInfo, method: str, s_keys, t_keys):
  """Every student and teacher feature is a rank-4 NHWC map."""
  for ks, kt in zip(s_keys, t_keys):
    s, t = shape(info, 'student', ks), shape(info, 'teacher', kt)
    if len(s) != 4 or len(t) != 4:
      raise ValueError(f'{method}: needs NHWC maps, but student {ks!r} has shape {s} and '
                       f'teacher {kt!r} has shape {t}.')


def require_poolable(method: str, ks, kt, s, t):
  """Shapes `s`, `t` (NHWC) can be matched by pooling the larger map (RD)."""
  (hs, ws), (ht, wt) = s[1:3], t[1:3]
  if not ((hs >= ht and ws >= wt) or (hs <= ht and ws <= wt)):
    raise ValueError(f'{method}: student {ks!r} ({hs}x{ws}) and teacher {kt!r} ({ht}x{wt}) '
                     'cannot be matched by pooling the larger map.')


def check_maps(info: BuildInfo, method: str, s_keys, t_keys):
  """Rank-4 maps whose spatial sizes can be matched by pooling the larger one."""
  require_maps(info, method, s_keys, t_keys)
  for ks, kt in zip(s_keys, t_keys):
    require_poolable(method, ks, kt, shape(info, 'student', ks), shape(info, 'teacher', kt))


def check_batched(info: BuildInfo, method: str, s_keys, t_keys):
  for ks, kt in zip(s_keys, t_keys):
    s, t = shape(info, 'student', ks), shape(info, 'teacher', kt)
    if len(s) < 2 or len(t) < 2:
      raise ValueError(f'{method}: needs per-sample features of rank >= 2, got student '
                       f'{ks!r} {s} and teacher {kt!r} {t}.')


def check_logits(info: BuildInfo, teacher: bool = True):
  s = info.feature('student', 'logits')
  if s.shape[-1] != info.num_classes:
    raise ValueError(f'student logits {tuple(s.shape)} do not have num_classes='
                     f'{info.num_classes} classes.')
  if teacher:
    t = info.feature('teacher', 'logits')
    if tuple(s.shape[1:]) != tuple(t.shape[1:]):
      raise ValueError(f'student logits {tuple(s.shape)} and teacher logits {tuple(t.shape)} '
                       f'have different class counts.')


def one_embedding(info: BuildInfo, method: str, student_features, teacher_features):
  """One student and one teacher per-sample feature (default: 'pooled')."""
  s_keys, t_keys = resolve_feature_pair(info, method, student_features, teacher_features,
                                        ('pooled',))
  if len(s_keys) != 1:
    raise ValueError(f'{method}: takes one student and one teacher feature, got '
                     f'{list(s_keys)} and {list(t_keys)}.')
  check_batched(info, method, s_keys, t_keys)
  return s_keys[0], t_keys[0]


def count_features(info: BuildInfo, fmt: str) -> int:
  """How many student features `fmt.format(0)`, `fmt.format(1)`, ... exist in a row."""
  n = 0
  while fmt.format(n) in info.student_shapes:
    n += 1
  return n


def same_logits(info: BuildInfo, method: str, keys):
  """Student logits `keys` all have shape [N, num_classes]."""
  shapes = {k: tuple(info.feature('student', k).shape[1:]) for k in keys}
  if len(set(shapes.values())) != 1:
    raise ValueError(f'{method}: logits of different shapes {shapes}.')
  k = next(iter(shapes.values()))
  if k != (info.num_classes,):
    raise ValueError(f'{method}: logits {shapes} do not have num_classes={info.num_classes}.')
