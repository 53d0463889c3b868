"""The `kdjax` command line.

  kdjax train --config configs/rd_cifar100.py:method=kd,teacher=resnet32x4,student=resnet8x4 --workdir DIR [--config.x=y ...]
  kdjax eval --workdir DIR
  kdjax export --workdir DIR --output student.msgpack   the student alone (aux modules dropped)
  kdjax export --workdir DIR --output student.pth --format torch   a PyTorch state_dict
  kdjax import-torch --arch resnet32x4 --checkpoint FILE.pth --dataset cifar100 --workdir DIR
  kdjax report DIR [DIR ...] [--best] [--error] [--format markdown|csv|latex] [--params]
                                       paper-layout table: methods x pairs, mean +- std over seeds
  kdjax bench --config FILE [--steps N | --epochs N] [--per_term] [--config.x=y ...]
  kdjax quickstart [--workdir DIR]     the embedded digits demo: teacher, baseline, KD student
  kdjax methods                        list the registered distillation methods
  kdjax config list [MODULE]           the cells of a per-paper config module, with launch commands
  kdjax config show MODULE:ARG         the resolved config of one cell (JSON)
  kdjax analyze <what> WORKDIR [...]   transferability, CKA, NMI, t-SNE, LRP, ... (JSON + figures)
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def _load_config(spec: str, overrides):
  from kdjax import config as config_lib
  from kdjax import validate
  path, _, arg = spec.partition(':')
  path = config_lib.config_path(path)  # a module name (rd_cifar100) or a file
  validate.check_config_file(path)
  cfg = config_lib.load_file(path, arg or None)
  config_lib.check(cfg)
  validate.check_overrides(cfg, overrides)
  cfg = config_lib.apply_overrides(cfg, overrides)
  validate.check_config(cfg)
  return cfg


def _split_overrides(argv):
  """Separate `--config.a.b=v` / `--config.a.b v` items from the other flags."""
  rest, overrides, i = [], [], 0
  while i < len(argv):
    a = argv[i]
    if a.startswith('--config.'):
      if '=' in a:
        overrides.append(a[2:])
      elif i + 1 < len(argv):
        overrides.append(a[2:] + '=' + argv[i + 1])
        i += 1
      else:
        raise SystemExit(f'{a} needs a value.')
    else:
      rest.append(a)
    i += 1
  return rest, overrides


def cmd_train(args, overrides):
  from kdjax.train import train_and_evaluate
  cfg = _load_config(args.config, overrides)
  if args.force_new and args.allow_config_change:
    raise ValueError('--force_new and --allow_config_change exclude each other.')
  on_change = 'new' if args.force_new else 'continue' if args.allow_config_change else 'error'
  results = train_and_evaluate(cfg, args.workdir, on_config_change=on_change)
  print(json.dumps(results, indent=2))
  return 0 if not results.get('interrupted') else 143


def cmd_eval(args, overrides):
  from kdjax.train import evaluate_workdir
  res = evaluate_workdir(args.workdir)
  print(json.dumps(res, indent=2))
  return 0


def cmd_export(args, overrides):
  if args.format == 'torch':
    from kdjax.interop import api as interop
    print(json.dumps(interop.export_torch(args.workdir, args.output), indent=2))
    return 0
  from kdjax.train import export_student
  print(json.dumps(export_student(args.workdir, args.output), indent=2))
  return 0


def cmd_import_torch(args, overrides):
  from kdjax.interop import api as interop
  res = interop.import_torch(args.arch, args.checkpoint, args.dataset, args.workdir,
                             num_classes=args.num_classes, prefix=args.prefix,
                             trust=args.trust_checkpoint)
  print(json.dumps(res, indent=2, default=float))
  return 0


def cmd_report(args, overrides):
  from kdjax import report
  report.run(args.workdirs, metric='best' if args.best else 'last', error=args.error,
             fmt=args.format, params=args.params)
  return 0


def cmd_bench(args, overrides):
  from kdjax import bench
  if args.epochs and args.per_term:
    raise ValueError('--per_term times single steps; it does not combine with --epochs.')
  cfg = _load_config(args.config, overrides)
  bench.run(cfg, steps=args.steps, per_term=args.per_term, teacher_arch=args.teacher_arch,
            epochs=args.epochs)
  return 0


def cmd_quickstart(args, overrides):
  from kdjax import quickstart
  quickstart.run(args.workdir, overrides, on_config_change='new' if args.force_new else 'error')
  return 0


def cmd_analyze(args, overrides):
  from kdjax.analysis import cli
  return cli.run(args)


def cmd_methods(args, overrides):
  from kdjax.distill import hyperparameters, registered_methods
  if args.markdown:
    print('| method | family | paper | default hyper-parameters |')
    print('|---|---|---|---|')
  for name, m in sorted(registered_methods().items()):
    if args.markdown:
      hp = ', '.join(f'{k}={v!r}' for k, v in hyperparameters(name).items()
                     if k not in ('student_features', 'teacher_features') and v is not None)
      print(f'| `{name}` | {m.family} | {m.paper} | {hp} |')
    else:
      print(f'{name:16s} {m.family:22s} {m.paper}')
  return 0


def cmd_config(args, overrides):
  from kdjax import config_cli
  if args.action == 'list':
    config_cli.list_cells(args.target)
  else:
    if not args.target:
      raise ValueError('kdjax config show needs MODULE[:ARG], e.g. rd_cifar100:method=kd')
    config_cli.show(args.target, overrides)
  return 0


def run(argv=None) -> int:
  if argv is None:  # the command line itself (not a call from Python): before JAX starts
    from kdjax import huge_pages
    huge_pages.reexec()   # the heap on transparent huge pages (kdjax/huge_pages.py)
  argv = list(sys.argv[1:] if argv is None else argv)
  from kdjax import runtime
  runtime.initialize()  # KDJAX_DISTRIBUTED=1: multi-host (TPU pods, multi-GPU, launch/local_multiprocess.py)
  rest, overrides = _split_overrides(argv)
  parser = argparse.ArgumentParser(prog='kdjax', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = parser.add_subparsers(dest='cmd', required=True)
  p = sub.add_parser('train', help='train a teacher or distil a student')
  p.add_argument('--config', required=True)
  p.add_argument('--workdir', required=True)
  p.add_argument('--force_new', action='store_true',
                 help='if the workdir holds another run, move it to <workdir>.old-<time> first')
  p.add_argument('--allow_config_change', action='store_true',
                 help='resume the workdir\'s run under a changed config (the old config is kept)')
  p = sub.add_parser('eval', help='re-evaluate the newest checkpoint of a workdir')
  p.add_argument('--workdir', required=True)
  p = sub.add_parser('export', help='write the student (no auxiliary modules) to a msgpack file')
  p.add_argument('--workdir', required=True)
  p.add_argument('--output', required=True)
  p.add_argument('--format', choices=('flax', 'torch'), default='flax',
                 help='flax: msgpack of params + batch_stats (default); torch: a state_dict that '
                      'loads with strict=True into the PyTorch reference of the architecture')
  p = sub.add_parser('import-torch', help='a PyTorch checkpoint as a kdjax workdir (a teacher)')
  p.add_argument('--arch', required=True, help='kdjax architecture name, e.g. resnet32x4')
  p.add_argument('--checkpoint', required=True, help='.pth file: a state_dict or {"model": ...}')
  p.add_argument('--dataset', required=True, help='dataset the network was trained on')
  p.add_argument('--workdir', required=True)
  p.add_argument('--num_classes', type=int, default=None,
                 help='classifier outputs (default: the dataset\'s class count)')
  p.add_argument('--prefix', default='',
                 help='keep only keys with this prefix, stripped (e.g. student. for a distiller)')
  p.add_argument('--trust_checkpoint', action='store_true',
                 help='load pickled objects too (torch.load weights_only=False); trusted '
                      'files only')
  p = sub.add_parser('report', help='paper-layout table: mean +- std over seeds per method and pair')
  p.add_argument('workdirs', nargs='+')
  p.add_argument('--best', action='store_true', help='best-epoch top-1 (default: last epoch)')
  p.add_argument('--error', action='store_true', help='top-1 error instead of accuracy')
  p.add_argument('--format', choices=('markdown', 'csv', 'latex'), default='markdown')
  p.add_argument('--params', action='store_true', help="append results.json's parameter counts")
  p = sub.add_parser('bench', help='time the compiled train step on synthetic batches')
  p.add_argument('--config', required=True)
  p.add_argument('--steps', type=int, default=20)
  p.add_argument('--per_term', action='store_true',
                 help='also time plain KD and KD + each other term, one at a time')
  p.add_argument('--teacher_arch', default='',
                 help='teacher architecture when the config has no trained teacher (random init)')
  p.add_argument('--epochs', type=int, default=0,
                 help='instead: run the training loop for N epochs (evaluation and checkpoints '
                      'included) on synthetic data of the full dataset size, and project the '
                      "config's whole run")
  p = sub.add_parser('quickstart', help='digits demo: teacher, baseline student, KD student')
  p.add_argument('--workdir', default='runs/quickstart')
  p.add_argument('--force_new', action='store_true',
                 help='move runs of another config (e.g. an older quickstart) aside first')
  p = sub.add_parser('analyze', help='analyses of trained runs (kdjax/analysis): JSON, PNG, PDF')
  from kdjax.analysis import cli as analysis_cli
  analysis_cli.add_arguments(p)
  p = sub.add_parser('methods', help='list registered distillation methods')
  p.add_argument('--markdown', action='store_true', help='as the README table')
  p = sub.add_parser('config', help='list the cells of a config module, or show one resolved')
  p.add_argument('action', choices=('list', 'show'))
  p.add_argument('target', nargs='?', default='', help='MODULE (list) or MODULE:ARG (show)')
  args = parser.parse_args(rest)
  if overrides and args.cmd in ('eval', 'export', 'import-torch', 'report', 'methods', 'analyze'):
    parser.error(f'{args.cmd} takes no --config.* overrides')
  cmd = {'train': cmd_train, 'eval': cmd_eval, 'export': cmd_export, 'report': cmd_report,
         'bench': cmd_bench, 'import-torch': cmd_import_torch, 'quickstart': cmd_quickstart,
         'methods': cmd_methods, 'config': cmd_config, 'analyze': cmd_analyze}[args.cmd]
  from kdjax.train.checkpoint import CheckpointError, CheckpointSaveError
  try:
    return cmd(args, overrides)
  except (KeyError, ValueError, FileNotFoundError, FileExistsError, NotADirectoryError,
          PermissionError, CheckpointError) as e:
    # User errors: one clear line, no traceback (KDJAX_DEBUG=1 shows it). A
    # failed save is not the user's input, but one line says all there is.
    if os.environ.get('KDJAX_DEBUG'):
      raise
    msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
    print(f'kdjax {args.cmd}: error: {msg}', file=sys.stderr)
    return 1 if isinstance(e, CheckpointSaveError) else 2


if __name__ == '__main__':
  sys.exit(run())
