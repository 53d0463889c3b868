"""Test-split evaluation of a student (or of every seed of a group) and its one-line summary."""

from __future__ import annotations

import jax
import numpy as np

from kdjax.train import inputs, metrics as metrics_lib, setup as setup_lib, step as step_lib


class Evaluator:
  """Evaluates the student (and caches the teacher's logits) on the test split."""

  def __init__(self, setup):
    self.setup = setup
    ds = setup.dataset
    self.repl = setup_lib.replicated(setup.mesh)
    self.shard = setup_lib.data_sharded(setup.mesh)
    bs = setup.config.eval_batch_size
    bs = max(jax.device_count(), bs - bs % jax.device_count())
    self.batch_size = bs
    self.fn = jax.jit(step_lib.make_eval_fn(setup.student, setup.survival),
                      in_shardings=(self.repl, self.repl, self.shard), out_shardings=self.repl)
    self.teacher_logits = None
    if setup.teacher is not None:
      tfn = jax.jit(step_lib.make_eval_fn(setup.teacher.model),
                    in_shardings=(self.repl, self.repl, self.shard), out_shardings=self.repl)
      tv = inputs.replicate(setup.teacher.variables, self.repl)
      self.teacher_logits = self._logits(lambda x: tfn(tv['params'], tv['batch_stats'], x))['logits']
    self.labels = np.asarray(ds.test_labels) if ds.in_memory else None

  def _logits(self, fn) -> dict[str, np.ndarray]:
    ds, out, labels = self.setup.dataset, [], []
    if ds.in_memory:
      for x, y, valid in inputs.eval_batches(ds.test_images, ds.test_labels, self.batch_size):
        x = inputs.global_batch_to_devices(inputs.normalize_host(x, ds), self.shard)
        out.append({k: np.asarray(v)[:valid] for k, v in fn(x).items()})
    else:
      for batch in ds.test_stream(self.batch_size):
        # Test streams are per host: the logits come back in process order.
        x = inputs.host_batch_to_global(inputs.normalize_host(batch['image'], ds), self.shard)
        mask = inputs.gather_host_rows(batch['mask'])
        out.append({k: np.asarray(v)[mask] for k, v in fn(x).items()})
        labels.append(inputs.gather_host_rows(batch['label'])[mask])
      self.labels = np.concatenate(labels)
    return {k: np.concatenate([o[k] for o in out]) for k in out[0]}

  def __call__(self, state, final: bool = False) -> dict[str, float]:
    params, bs = state['params']['student'], state['batch_stats']
    return self.metrics(self._logits(lambda x: self.fn(params, bs, x)), final)

  def metrics(self, outputs: dict[str, np.ndarray], final: bool = False) -> dict[str, float]:
    """Metrics of test-split outputs {name: logits}, the student's under 'logits'."""
    outputs = dict(outputs)
    logits = outputs.pop('logits')
    res = metrics_lib.classification_metrics(logits, self.labels)
    if self.teacher_logits is not None:
      res.update(metrics_lib.agreement_metrics(logits, self.teacher_logits))
    if final:
      res['ece'] = metrics_lib.expected_calibration_error(logits, self.labels, 15)
      res['aurc'] = metrics_lib.aurc(logits, self.labels)
    for name, extra in outputs.items():  # cohort members, ONE branches, ensembles
      prefix = name[:-len('/logits')]
      res.update({f'{prefix}/{k}': v for k, v in
                  metrics_lib.classification_metrics(extra, self.labels).items()})
    return res


class GroupEvaluator(Evaluator):
  """Evaluates every seed's student in one vmapped pass; metrics as `Evaluator`'s, one dict a seed."""

  def __init__(self, setup):
    super().__init__(setup)
    fn = step_lib.make_eval_fn(setup.student, setup.survival)
    # Outputs [batch, seed, ...], so the padded tail of the last batch slices off as usual.
    self.group_fn = jax.jit(jax.vmap(fn, in_axes=(0, 0, None), out_axes=1),
                            in_shardings=(self.repl, self.repl, self.shard), out_shardings=self.repl)

  def __call__(self, state, final: bool = False) -> list[dict[str, float]]:
    params, bs = state['params']['student'], state['batch_stats']
    outputs = self._logits(lambda x: self.group_fn(params, bs, x))
    n = jax.tree.leaves(params)[0].shape[0]
    return [self.metrics({k: v[:, i] for k, v in outputs.items()}, final) for i in range(n)]


def eval_line(stage: str, res: dict, total_epochs: float, sec_per_epoch: float | None) -> str:
  """`epoch 5/15  top1 0.9611  loss 0.142  agree 0.97  12.3 s/epoch` (one line per evaluation)."""
  parts = [f'{stage + "  " if stage else ""}epoch {res["epoch"]:g}/{total_epochs:g}',
           f'top1 {res["top1"]:.4f}', f'loss {res["loss"]:.3f}']
  if 'teacher_agreement' in res:
    parts.append(f'agree {res["teacher_agreement"]:.2f}')
  if sec_per_epoch is not None:
    parts.append(f'{sec_per_epoch:.1f} s/epoch')
  return '  '.join(parts)


def print_eval(bar, stage, res, total_epochs, sec_per_epoch):
  """The evaluation's line, below the progress bar when there is one."""
  line = eval_line(stage, res, total_epochs, sec_per_epoch)
  if bar is not None:
    bar.set_postfix(top1=f'{res["top1"]:.4f}')
    bar.write(line)
  else:
    print(line, flush=True)
