"""Training: one generic step (`step`), the driver that runs it (`driver`, via `loop`), checkpoints."""


def __getattr__(name):
  # Lazy, so `kdjax.train.metrics` or `optim` import without the data stack.
  if name in ('train_and_evaluate', 'evaluate_workdir', 'export_student', 'NonFiniteLossError'):
    from kdjax.train import loop
    return getattr(loop, name)
  raise AttributeError(name)


__all__ = ['train_and_evaluate', 'evaluate_workdir', 'export_student', 'NonFiniteLossError']
