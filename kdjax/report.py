"""`kdjax report`: results of many runs as a table in the papers' layout.

  kdjax report runs/cifar100/*_s*                        Markdown, last-epoch top-1 (%)
  kdjax report runs/... --best --error --format latex     best-epoch top-1 error, LaTeX
  kdjax report runs/... --params --format csv             with parameter counts, CSV

Rows are methods (the `methods` of results.json joined with '+'; runs without a teacher
or terms fill the `teacher` and `student` rows of the columns whose teacher / student
architecture they trained), columns are teacher -> student pairs (with the label-noise
rate or imbalance ratio when there is one). A cell is the mean +- sample std (ddof=1)
over the runs of one experiment, i.e. over runs whose config.json agree on everything but
the seed and bookkeeping keys (IGNORED). Runs of different experiments that land in the
same cell are never averaged: each gets its own row, labelled with the keys that differ.
A column without a teacher run reads the teacher's own results.json through
`teacher.checkpoint` when it exists. `--params` appends the student's parameter count
(+ auxiliary modules) from results.json's `params` field.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Sequence

import numpy as np

# Keys that do not define an experiment: runs differing only here are averaged.
IGNORED = ('seed', 'num_seeds', 'seeds', 'progress_bar', 'log_every_steps', 'eval_every_epochs',
           'checkpoint_every_epochs', 'keep_checkpoints', 'eval_batch_size', 'data.data_dir',
           'data.path', 'teacher.checkpoint')


@dataclasses.dataclass
class Run:
  workdir: str
  results: dict
  config: dict      # flat {'a.b': value} from config.json ({} when absent)

  @property
  def arch(self) -> str:
    cohort = self.config.get('model.cohort') or ()
    return '+'.join(cohort) if cohort else self.config.get('model.name', self.results.get('model'))

  @property
  def teacher(self) -> str:
    return self.config.get('teacher.arch') or self.results.get('teacher') or ''

  @property
  def methods(self) -> tuple[str, ...]:
    return tuple(self.results.get('methods') or ())

  @property
  def setting(self) -> str:
    """The data variant of the papers' noise / imbalance tables ('' when clean)."""
    parts = []
    if self.config.get('data.label_noise'):
      parts.append(f'noise={self.config["data.label_noise"]:g}')
    if self.config.get('data.imbalance_gamma'):
      parts.append(f'imbalance={self.config["data.imbalance_gamma"]:g}')
    return ' '.join(parts)

  @property
  def dataset(self) -> str:
    return self.config.get('data.name', '')

  @property
  def key(self) -> str:
    """The experiment: config without IGNORED keys (results fields when there is no config)."""
    if self.config:
      return json.dumps({k: v for k, v in self.config.items() if k not in IGNORED},
                        sort_keys=True, default=str)
    return json.dumps([self.results.get('model'), self.teacher, list(self.methods)])


def _flat(d: dict, prefix: str = '') -> dict:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict) and v:
      out.update(_flat(v, prefix + k + '.'))
    else:
      out[prefix + k] = tuple(v) if isinstance(v, list) else ('{}' if isinstance(v, dict) else v)
  return out


def _read(workdir: str) -> Run:
  path = os.path.join(workdir, 'results.json')
  if not os.path.exists(path):
    raise FileNotFoundError(f'{workdir!r} has no results.json (unfinished run?); finish or drop it.')
  with open(path) as f:
    results = json.load(f)
  config = {}
  cfg_path = os.path.join(workdir, 'config.json')
  if os.path.exists(cfg_path):
    with open(cfg_path) as f:
      config = _flat(json.load(f))
  return Run(workdir, results, config)


def seed_workdirs(workdir: str) -> list[str]:
  """[workdir], or the seed<k> runs of a group of seeds trained together (num_seeds > 1)."""
  path = os.path.join(workdir, 'config.json')
  if os.path.exists(os.path.join(workdir, 'results.json')) or not os.path.exists(path):
    return [workdir]
  with open(path) as f:
    cfg = json.load(f)
  n = len(cfg.get('seeds') or ()) or int(cfg.get('num_seeds', 1))
  if n == 1 and not cfg.get('seeds'):
    return [workdir]
  return [os.path.join(workdir, f'seed{k}') for k in range(n)]


def load(workdirs: Sequence[str]) -> list[Run]:
  """The runs of `workdirs`; a group of seeds trained together reads as its seed<k> runs."""
  return [_read(s) for d in workdirs for s in seed_workdirs(d)]


def value(run: Run, metric: str = 'last') -> float:
  """Top-1 of the last ('last') or best ('best') evaluation, as a fraction."""
  if metric not in ('last', 'best'):
    raise ValueError(f"metric must be 'last' or 'best', got {metric!r}.")
  return float((run.results['final'] if metric == 'last' else run.results['best'])['top1'])


def summarize(runs: list[Run]) -> dict[str, dict[str, float]]:
  """{metric: {'mean', 'std', 'n'}} over runs of one experiment; std is the sample std (ddof=1)."""
  values: dict[str, list[float]] = {}
  for r in runs:
    for k, v in r.results['final'].items():
      if isinstance(v, (int, float)) and k not in ('epoch', 'stage'):
        values.setdefault(f'last/{k}', []).append(float(v))
    values.setdefault('best/top1', []).append(float(r.results['best']['top1']))
  return {k: _stats(v) for k, v in values.items()}


def _stats(v: Sequence[float]) -> dict:
  a = np.asarray(v, np.float64)
  return {'mean': float(a.mean()), 'std': float(a.std(ddof=1)) if len(a) > 1 else 0.0,
          'n': len(a), 'values': [float(x) for x in a]}


def _row(run: Run) -> str:
  return '+'.join(run.methods) if run.methods else 'baseline'


def _column(run: Run, datasets: int) -> str:
  col = f'{run.teacher} -> {run.arch}' if run.teacher else run.arch
  if run.setting:
    col += f' ({run.setting})'
  return f'{run.dataset}: {col}' if datasets > 1 else col


def _teacher_run(run: Run) -> Run | None:
  path = run.config.get('teacher.checkpoint', '')
  if path and os.path.exists(os.path.join(path, 'results.json')):
    return _read(path)
  return None


def _params(runs: list[Run]) -> str:
  counts = [r.results.get('params') or {} for r in runs]
  if not counts or not all(c.get('student') for c in counts):
    return ''
  s, aux = counts[0]['student'], counts[0].get('aux') or 0
  return f'{s / 1e6:.2f}M' + (f' +{aux / 1e6:.2f}M' if aux else '')


def table(runs: list[Run], metric: str = 'last', error: bool = False, params: bool = False) -> dict:
  """The paper-layout table: {'rows', 'columns', 'cells': {(row, col): stats}, 'notes'}."""
  datasets = len({r.dataset for r in runs})
  groups: dict[str, list[Run]] = {}
  for r in runs:
    groups.setdefault(r.key, []).append(r)
  distilled = [g for g in groups.values() if g[0].teacher or g[0].methods]
  columns = list(dict.fromkeys(_column(g[0], datasets) for g in distilled))
  placed: dict[tuple[str, str], list[list[Run]]] = {}
  for g in groups.values():
    r = g[0]
    if r.teacher or r.methods or not distilled:
      targets = [(_row(r), _column(r, datasets))]
      if not distilled:
        columns.append(_column(r, datasets))
    else:  # a run from scratch: the student / teacher row of every matching column
      targets = []
      for d in distilled:
        if (d[0].dataset, d[0].setting) != (r.dataset, r.setting):
          continue
        col = _column(d[0], datasets)
        if d[0].arch == r.arch:
          targets.append(('student', col))
        if d[0].teacher == r.arch:
          targets.append(('teacher', col))
    for t in dict.fromkeys(targets):
      placed.setdefault(t, [])
      if all(x[0].key != r.key for x in placed[t]):
        placed[t].append(g)
  notes = []
  for d in distilled:  # teacher rows from teacher.checkpoint when no teacher run was given
    col = _column(d[0], datasets)
    if ('teacher', col) not in placed:
      teachers = {t.workdir: t for t in map(_teacher_run, d) if t is not None}
      if teachers:
        placed[('teacher', col)] = [list(teachers.values())]
        notes.append(f'teacher of {col!r}: {", ".join(sorted(teachers))}')
  columns = list(dict.fromkeys(columns))
  # Keys that tell apart experiments sharing a cell, per row; every run of that row is then
  # labelled with its values of them, so different experiments are never averaged and equal
  # ones line up across columns.
  split: dict[str, set] = {}
  for (row, _), gs in placed.items():
    for g in gs:
      split.setdefault(row, set()).update(
          k for x in gs if x is not g for k in set(g[0].config) | set(x[0].config)
          if k not in IGNORED and x[0].config.get(k) != g[0].config.get(k))
  cells, rows = {}, []
  for (row, col), gs in placed.items():
    for g in gs:
      keys = sorted(split.get(row, ()))
      label = row + (' [' + ', '.join(f'{k}={g[0].config.get(k)}' for k in keys) + ']'
                     if keys else '')
      vals = [value(r, metric) for r in g]
      stats = _stats([100.0 * (1.0 - v) if error else 100.0 * v for v in vals])
      stats['seeds'] = [r.results.get('seed') for r in g]
      stats['params'] = _params(g) if params else ''
      if len(set(stats['seeds'])) < len(stats['seeds']):
        notes.append(f'{label} / {col}: runs share a seed; the std understates seed variance.')
      if (label, col) in cells:
        raise ValueError(f'two experiments share the cell {label!r} / {col!r}; report them '
                         'separately.')
      cells[(label, col)] = stats
      rows.append(label)
  order = {'teacher': 0, 'student': 1}
  rows = sorted(dict.fromkeys(rows), key=lambda r: (order.get(r, 2), r))
  return {'rows': rows, 'columns': columns, 'cells': cells, 'notes': notes, 'metric': metric,
          'error': error}


def _cell_text(s: dict | None, latex: bool = False) -> str:
  if s is None:
    return '-'
  pm = ' $\\pm$ ' if latex else ' ± '
  text = f'{s["mean"]:.2f}' + (f'{pm}{s["std"]:.2f}' if s['n'] > 1 else '')
  return text + (f' ({s["params"]})' if s.get('params') else '')


def render(t: dict, fmt: str = 'markdown') -> str:
  rows, cols, cells = t['rows'], t['columns'], t['cells']
  what = (f'top-1 {"error" if t["error"] else "accuracy"} (%), {t["metric"]} epoch, '
          'mean ± sample std over seeds')
  if fmt == 'markdown':
    out = ['| method | ' + ' | '.join(cols) + ' |', '|---' * (len(cols) + 1) + '|']
    out += ['| ' + r + ' | ' + ' | '.join(_cell_text(cells.get((r, c))) for c in cols) + ' |'
            for r in rows]
    ns = sorted({s['n'] for s in cells.values()})
    out.append(f'\n{what}; runs per cell: {", ".join(map(str, ns))}.')
  elif fmt == 'csv':
    head = ['method'] + [f'{c} {x}' for c in cols for x in ('mean', 'std', 'n')]
    out = [','.join(_csv(h) for h in head)]
    for r in rows:
      vals = [r]
      for c in cols:
        s = cells.get((r, c))
        vals += ([f'{s["mean"]:.4f}', f'{s["std"]:.4f}', str(s['n'])] if s else ['', '', ''])
      out.append(','.join(_csv(v) for v in vals))
  elif fmt == 'latex':
    esc = lambda x: x.replace('_', '\\_').replace('->', '$\\to$')
    out = ['\\begin{tabular}{l' + 'c' * len(cols) + '}', '\\toprule',
           'Method & ' + ' & '.join(esc(c) for c in cols) + ' \\\\', '\\midrule']
    out += [esc(r) + ' & ' + ' & '.join(_cell_text(cells.get((r, c)), latex=True) for c in cols)
            + ' \\\\' for r in rows]
    out += ['\\bottomrule', '\\end{tabular}', f'% {what}']
  else:
    raise ValueError(f"format must be 'markdown', 'csv' or 'latex', got {fmt!r}.")
  return '\n'.join(out + [f'note: {n}' for n in t['notes']] if fmt == 'markdown' else out)


def _csv(x: str) -> str:
  return f'"{x}"' if ',' in x or '"' in x else x


def run(workdirs: Sequence[str], metric: str = 'last', error: bool = False, fmt: str = 'markdown',
        params: bool = False) -> dict:
  """Print the table of `workdirs` (and, for one experiment, every final metric)."""
  runs = load(workdirs)
  t = table(runs, metric, error, params)
  print(render(t, fmt))
  if len({r.key for r in runs}) == 1 and fmt == 'markdown':
    summary = summarize(runs)
    print(f'\n{len(runs)} runs of one experiment, seeds {[r.results.get("seed") for r in runs]}')
    for k in ('last/top1', 'best/top1', 'last/top5', 'last/ece', 'last/aurc',
              'last/teacher_agreement'):
      if k in summary:
        s = summary[k]
        print(f'  {k:24s} {100 * s["mean"]:.2f} +- {100 * s["std"]:.2f}  (n={s["n"]}, in %)')
    t['summary'] = summary
  return t
