"""`kdjax bench`: time the compiled train step on synthetic data of a config's shapes.

Runs without the dataset and, when the config's teacher checkpoint does not
exist, with a randomly initialised teacher of `teacher.arch` (timing does not
depend on the weights). Reports compile time, median step time, images/s and
the teacher forward's share of the step (with KDJAX_CPU_FOLD_TEACHER_BN=1 on
CPU, of the teacher with its eval-mode BN folded, as training then runs it).
The last line is machine-readable.

`--epochs N` instead runs the training driver itself for N epochs on synthetic
data of the dataset's full size (train and test split), in a temporary workdir:
every evaluation, checkpoint and host sync the real run does. It reports the
first epoch (build, compiles, teacher test logits), the steady epoch, and the
whole run's time projected from them: what "a 240-epoch run in N minutes" needs.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import statistics
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from kdjax import data as data_lib
from kdjax import models
from kdjax import huge_pages, xla_env
from kdjax.models import fold, winograd
from kdjax.train import driver, loop, multiseed, optim, setup as setup_lib

# (image shape, classes, training-set size) of each dataset, so no data is read.
SHAPES = {
    'digits': ((8, 8, 1), 10, 1437),
    'cifar10': ((32, 32, 3), 10, 50000),
    'cifar100': ((32, 32, 3), 100, 50000),
    'stl10': ((96, 96, 3), 10, 5000),
    'imagenet2012': (None, 1000, 1281167),
    'fer2013': ((None, 1), 7, 28709),   # grayscale at data.image_size
    'folder': ((None, 3), 7, 12271),    # RAF-DB basic's size; any folder times the same
}
# Test-split sizes, for `--epochs` (the driver evaluates on it). ImageNet is streamed
# through grain in real runs, which synthetic in-memory data would not time.
TEST_SIZES = {'digits': 360, 'cifar10': 10000, 'cifar100': 10000, 'stl10': 8000,
              'fer2013': 3589, 'folder': 3068}


def synthetic_dataset(cfg, pool: int, num_test: int = 8):
  name = cfg.data.name
  if name not in SHAPES:
    raise ValueError(f'kdjax bench knows the shapes of {sorted(SHAPES)}, not {name!r}.')
  shape, classes, num_train = SHAPES[name]
  if shape is None:
    shape = (cfg.data.image_size, cfg.data.image_size, 3)
  elif shape[0] is None:
    shape = (cfg.data.image_size, cfg.data.image_size, shape[1])
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (pool + num_test,) + shape, dtype=np.uint8)
  labels = rng.integers(0, classes, (pool + num_test,), dtype=np.int32)
  return data_lib.Dataset(
      name=name, num_classes=classes, image_shape=shape, mean=(0.5,) * shape[-1],
      std=(0.25,) * shape[-1], num_train=pool, train_images=images[:pool],
      train_labels=labels[:pool], test_images=images[pool:], test_labels=labels[pool:],
      clean_train_labels=labels[:pool],
      train_stream=None, test_stream=None, in_memory=True)


def _teacher(cfg, dataset):
  if cfg.teacher.checkpoint and os.path.isdir(cfg.teacher.checkpoint):
    return None  # build() loads the real one
  if not cfg.teacher.arch:
    return None
  model = models.create(cfg.teacher.arch, dataset.num_classes)
  variables = model.init(jax.random.key(1), jnp.zeros((2,) + dataset.image_shape), train=False)
  return setup_lib.Teacher(model, dict(variables), cfg.teacher.arch, 'random-init', '')


def _synthetic_setup(cfg, teacher_arch: str, pool: int, num_test: int = 8):
  """A copy of cfg (with `teacher_arch` if given) and its Setup on synthetic data."""
  cfg = copy.deepcopy(cfg)
  if teacher_arch:
    cfg.teacher.arch = teacher_arch
  dataset = synthetic_dataset(cfg, pool, num_test)
  return cfg, setup_lib.build(cfg, dataset=dataset, teacher=_teacher(cfg, dataset))


def _runner(cfg, setup, workdir: str):
  """The training driver's runner: a seed group's or a single run's."""
  return (multiseed.SeedGroup if multiseed.is_group(cfg) else loop.SingleRun)(cfg, setup, workdir)


class PreparedStep:
  """A compiled train step on synthetic data; `__call__()` runs one step and blocks.

  `compile_s` is the first (compiling) call's time. A config with num_seeds > 1 (or
  seeds) compiles the seed group's vmapped step; `num_seeds` says how many batches
  of `batch_size` one step trains. Used by `time_step` and by
  the side-by-side benchmarks in benchmarks/ (which alternate it with PyTorch).
  """

  def __init__(self, cfg, teacher_arch: str = ''):
    self.batch_size = bs = cfg.optim.batch_size
    # A given teacher replaces the config's checkpoint in build().
    cfg, setup = _synthetic_setup(cfg, teacher_arch, pool=4 * bs)
    self.setup = setup
    dataset = setup.dataset
    repl = setup_lib.replicated(setup.mesh)
    # The program training runs: a compiled loop of k = steps_per_dispatch steps per call,
    # vmapped over the seeds of a seed group (num_seeds / seeds).
    self.steps_per_call = k = loop.steps_per_dispatch(cfg, dataset)
    # The training driver's runner, built without a workdir: it writes nothing until
    # driver.run calls make_dirs, and the benchmark never does.
    runner = _runner(cfg, setup, '')
    variables = runner.init_variables()
    self.state = runner.fresh_state(variables)
    tx, _ = optim.stage_tx(setup, 0, variables['params'])
    self.compiled = runner.compile(0, tx, k)
    self.num_seeds = len(runner.cfgs)
    self.train_step = lambda s, t, d: self.compiled(s, t, d, np.int32(k))
    self.data = jax.device_put({'image': dataset.train_images, 'label': dataset.train_labels}, repl)
    self.tvars = jax.device_put(setup.teacher.variables if setup.teacher else {}, repl)
    self.image_shape = dataset.image_shape
    t0 = time.perf_counter()
    self()
    self.compile_s = time.perf_counter() - t0

  def __call__(self):
    self.state, m = self.train_step(self.state, self.tvars, self.data)
    jax.block_until_ready(m)
    return m

  def teacher_forward(self):
    """A jitted eval-mode teacher forward on one step's images (every seed's batch of a
    group: its shared teacher sees them all); `fn()` runs and blocks."""
    setup = self.setup
    tfn = jax.jit(lambda v, x: setup.teacher.model.apply(v, x, train=False))
    rows = self.batch_size * self.num_seeds
    x = jax.device_put(jnp.zeros((rows,) + self.image_shape, jnp.float32),
                       setup_lib.data_sharded(setup.mesh))
    return lambda: jax.block_until_ready(tfn(self.tvars, x))


def _folded(setup) -> bool:
  """Whether the step's teacher runs with its BN folded (kdjax.models.fold; opt-in on CPU)."""
  return setup.teacher is not None and isinstance(setup.teacher.model, fold.BatchNormFolded)


def median_time(fn, steps: int) -> float:
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def time_step(cfg, steps: int, teacher_arch: str = '') -> dict[str, float]:
  prep = PreparedStep(cfg, teacher_arch)
  bs = prep.batch_size
  step_s = median_time(prep, max(1, steps // prep.steps_per_call)) / prep.steps_per_call
  # A seed group's step trains every seed on its own batch.
  out = {'compile_s': prep.compile_s, 'step_ms': step_s * 1e3,
         'images_per_sec': bs * prep.num_seeds / step_s, 'seeds': prep.num_seeds,
         'teacher_share': 0.0, 'teacher_bn_folded': _folded(prep.setup)}
  if prep.setup.teacher is not None:
    tfwd = prep.teacher_forward()
    tfwd()
    out['teacher_share'] = median_time(tfwd, steps) / step_s
  return out


class _WithoutLines(io.TextIOBase):
  """Passes lines through to `out` as they come, except those starting with `prefix`."""

  def __init__(self, out, prefix: str):
    self.out, self.prefix, self.pending = out, prefix, ''

  def write(self, text: str) -> int:
    *lines, self.pending = (self.pending + text).split('\n')
    for line in lines:
      if not line.startswith(self.prefix):
        self.out.write(line + '\n')
    self.out.flush()
    return len(text)

  def flush(self) -> None:
    self.out.flush()


def _epoch_ends(workdir: str) -> list[float]:
  """Wall-clock times of the epoch ends of a run, from its metrics.jsonl."""
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    records = [json.loads(line) for line in f]
  return [r['time'] for r in records if r['kind'] == 'train_epoch']


def time_epochs(cfg, epochs: int, teacher_arch: str = '') -> dict[str, float]:
  """Runs the training driver for `epochs` epochs on synthetic data of the full dataset size.

  Returns the first epoch's wall time (from before `setup.build`: compiles and the
  teacher's test logits included), the steady epoch (the mean over the later ones:
  training, and the evaluations and checkpoints the config does at their ends, so
  with `eval_every_epochs=k` run 1 + a multiple of k epochs), training images/s
  (the driver's own clock, without evaluation, checkpoints and the compile; after
  the first epoch when a checkpoint recorded it there, and then also the steady
  epoch's time beyond training), and the whole run projected as
  first + (epochs in the config - 1) x steady (the epochs run are the first stage's; later
  stages of a multi-stage config are assumed to cost as much).
  """
  name = cfg.data.name
  if name not in TEST_SIZES:
    raise ValueError(f'kdjax bench --epochs runs in-memory datasets ({sorted(TEST_SIZES)}); '
                     f'{name!r} is streamed from disk in real runs, so synthetic in-memory data '
                     f'would not time it. Time its step with --steps instead.')
  if epochs < 2:
    raise ValueError(f'--epochs {epochs}: the steady epoch needs at least 2 epochs.')
  t_start = time.time()
  cfg, setup = _synthetic_setup(cfg, teacher_arch, pool=SHAPES[name][2], num_test=TEST_SIZES[name])
  spe = setup.steps_per_epoch
  if epochs * spe > setup.total_steps:
    raise ValueError(f'--epochs {epochs} is more than the config trains '
                     f'({setup.total_steps / spe:g} epochs).')
  with tempfile.TemporaryDirectory(prefix='kdjax-bench-') as workdir:
    runner = _runner(cfg, setup, workdir)
    # The driver's last line offers a resume, which a benchmark in a temporary dir does not.
    with contextlib.redirect_stdout(_WithoutLines(sys.stdout, 'Stopped at step')):
      driver.run(runner, cfg, setup, workdir, t_start, stop_after_steps=epochs * spe)
    ends = _epoch_ends(runner.dirs[0])
    with open(os.path.join(runner.dirs[0], 'totals.json')) as f:
      totals = json.load(f)['by_step']  # at every checkpoint
  steady = (ends[-1] - ends[0]) / (len(ends) - 1)
  first = ends[0] - t_start
  # The driver's training clock (no evaluation, checkpoint or compile), after the first
  # epoch when a checkpoint recorded it there.
  end, after_first = totals[str(epochs * spe)], totals.get(str(spe))
  base = after_first or {'train_time_sec': 0.0, 'train_images': 0.0}
  rate = ((end['train_images'] - base['train_images'])
          / (end['train_time_sec'] - base['train_time_sec']))
  # Training alone would take an epoch's images at that rate; the rest of a steady epoch
  # is evaluation, checkpoints and host syncs.
  overhead = steady - spe * cfg.optim.batch_size / rate if after_first else None
  return {'epochs': epochs, 'steps_per_epoch': spe, 'seeds': len(runner.cfgs),
          'first_epoch_s': first, 'steady_epoch_s': steady, 'overhead_per_epoch_s': overhead,
          'train_images_per_sec': len(runner.cfgs) * rate,
          'config_epochs': setup.total_steps / spe,
          'projected_run_s': first + (setup.total_steps / spe - 1) * steady}


def run(cfg, *, steps: int = 20, per_term: bool = False, teacher_arch: str = '',
        epochs: int = 0) -> dict:
  devices = f'{jax.device_count()} x {jax.devices()[0].device_kind} ({jax.default_backend()})'
  if jax.default_backend() == 'cpu':
    devices += (f', convolutions via {xla_env.cpu_convolutions()} (kdjax/xla_env.py), 3x3 ones '
                f'{"Winograd" if winograd.enabled() else "direct"} from {winograd.MIN_CHANNELS} channels '
                f'(kdjax/models/winograd.py), heap huge pages {huge_pages.status()}')
  seeds = len(multiseed.seed_list(cfg)) if multiseed.is_group(cfg) else 1
  group = f' x {seeds} seeds (one vmapped step)' if seeds > 1 else ''
  print(f'kdjax bench: {cfg.model.name} on {cfg.data.name}, batch {cfg.optim.batch_size}{group}, '
        f'terms {list(cfg.distill.terms.keys()) or "none"}, devices {devices}', flush=True)
  if epochs:
    res = time_epochs(cfg, epochs, teacher_arch)
    overhead = ('' if res['overhead_per_epoch_s'] is None else
                f' ({res["overhead_per_epoch_s"]:.2f} s of it evaluation, checkpoints, host syncs)')
    print(f'{res["epochs"]} epochs of {res["steps_per_epoch"]} steps: first epoch '
          f'{res["first_epoch_s"]:.1f} s (build and compiles included), steady epoch '
          f'{res["steady_epoch_s"]:.2f} s{overhead}, training '
          f'{res["train_images_per_sec"]:.1f} img/s; the config\'s {res["config_epochs"]:g} epochs '
          f'projected: {res["projected_run_s"] / 60:.1f} min', flush=True)
    print(f'projected_run_minutes={res["projected_run_s"] / 60:.2f}', flush=True)
    return res
  if per_term:
    rows = {}
    base_terms = {k: dict(v) for k, v in cfg.distill.terms.items()}
    kd = {k: v for k, v in base_terms.items() if v.get('method', k) == 'kd'}
    if not kd:
      kd = {'kd': {'method': 'kd', 'weight': 0.9}}
    variants = {'kd': kd}
    for k, v in base_terms.items():
      if k not in kd:
        variants[f'kd+{k}'] = {**kd, k: v}
    for label, terms in variants.items():
      c = copy.deepcopy(cfg)
      with c.unlocked():
        c.distill.terms = terms
      rows[label] = time_step(c, steps, teacher_arch)
      r = rows[label]
      extra = r['step_ms'] - rows['kd']['step_ms']
      print(f'  {label:14s} step {r["step_ms"]:8.2f} ms  (+{extra:7.2f} ms over KD)  '
            f'{r["images_per_sec"]:9.1f} img/s  compile {r["compile_s"]:.1f} s', flush=True)
    res = rows['kd']
  else:
    res = time_step(cfg, steps, teacher_arch)
  folded = (' (BN folded into its convs: KDJAX_CPU_FOLD_TEACHER_BN=1)'
            if res['teacher_bn_folded'] else '')
  print(f'compile {res["compile_s"]:.2f} s, median step {res["step_ms"]:.2f} ms over {steps} steps, '
        f'teacher forward{folded} {100 * res["teacher_share"]:.1f}% of a step', flush=True)
  print(f'images_per_sec={res["images_per_sec"]:.1f}', flush=True)
  return res
