"""Training recipes shared by the files in `configs/` (METHODS.md section 6).

Config files stay one short function each: they pick a recipe here and state
what differs. Each recipe returns a locked `ConfigDict` from `base_config()`.
Teacher checkpoints are looked up at `runs/<dataset>/teacher_<arch>` relative
to the working directory unless `--config.teacher.checkpoint` says otherwise.
"""

from __future__ import annotations

from kdjax.config import ConfigDict, base_config

# RepDistiller uses lr 0.01 for these students (METHODS.md section 6).
_RD_LOW_LR = ('mobilenetv2', 'shufflenetv1', 'shufflenetv2')


def teacher_dir(dataset: str, arch: str) -> str:
  return f'runs/{dataset}/teacher_{arch}'


def digits(arch: str) -> ConfigDict:
  """The embedded 8x8 digits set: a minute or two on a 2-core CPU."""
  c = base_config()
  c.data.name = 'digits'
  c.data.crop_padding = 1   # one-pixel jitter; digits are not mirror-symmetric
  c.data.flip = False
  c.model.name = arch
  c.epochs = 15
  c.optim.batch_size = 64
  c.optim.lr = 0.05
  c.optim.weight_decay = 5e-4
  c.optim.schedule = 'cosine'
  c.optim.warmup_epochs = 1.0
  c.eval_every_epochs = 5
  c.checkpoint_every_epochs = 5
  c.log_every_steps = 20
  c.eval_batch_size = 360
  return c


def rd_cifar100(arch: str) -> ConfigDict:
  """RepDistiller / CRD CIFAR-100: 240 epochs, batch 64, lr 0.05 (0.01 for light nets)."""
  c = base_config()
  c.data.name = 'cifar100'
  c.model.name = arch
  c.epochs = 240
  c.optim.batch_size = 64
  c.optim.lr = 0.01 if arch in _RD_LOW_LR else 0.05
  c.optim.momentum = 0.9
  c.optim.weight_decay = 5e-4
  c.optim.schedule = 'piecewise'
  c.optim.boundaries_epochs = (150, 180, 210)
  c.optim.decay_factor = 0.1
  return c


def seed003_cifar10(arch: str) -> ConfigDict:
  """SRRL (seed 003) CIFAR-10: ResNets 350 epochs /10 at 150/250/320; WRNs 200 epochs /5 at 60/120/160."""
  c = base_config()
  c.data.name = 'cifar10'
  c.model.name = arch
  c.optim.batch_size = 128
  c.optim.lr = 0.1
  c.optim.weight_decay = 5e-4
  if arch.startswith('wrn'):
    c.epochs, c.optim.boundaries_epochs, c.optim.decay_factor = 200, (60, 120, 160), 0.2
  else:
    c.epochs, c.optim.boundaries_epochs, c.optim.decay_factor = 350, (150, 250, 320), 0.1
  return c


def imagenet(arch: str) -> ConfigDict:
  """CRD / seed 003 ImageNet: 100 epochs, batch 256, lr 0.1 /10 every 30, wd 1e-4."""
  c = base_config()
  c.data.name = 'imagenet2012'
  c.data.image_size = 224
  c.model.name = arch
  c.epochs = 100
  c.optim.batch_size = 256
  c.optim.lr = 0.1
  c.optim.weight_decay = 1e-4
  c.optim.boundaries_epochs = (30, 60, 90)
  c.eval_every_epochs = 1
  c.eval_batch_size = 500
  return c


def tfkd_cifar100(arch: str) -> ConfigDict:
  """Tf-KD's CIFAR-100 recipe: 200 epochs, batch 128, lr 0.1, 1 warm-up epoch, x0.2 at 60/120/160."""
  c = rd_cifar100(arch)
  c.epochs = 200
  c.optim.batch_size = 128
  c.optim.lr = 0.1
  c.optim.warmup_epochs = 1.0
  c.optim.boundaries_epochs = (60, 120, 160)
  c.optim.decay_factor = 0.2
  return c


RECIPES = {'digits': digits, 'cifar100': rd_cifar100, 'cifar10': seed003_cifar10,
           'imagenet2012': imagenet}


def teacher(dataset: str, arch: str) -> ConfigDict:
  return RECIPES[dataset](arch)


def student(dataset: str, teacher_arch: str, student_arch: str, terms: dict,
            ce_weight: float = 1.0) -> ConfigDict:
  """A distillation run: the student's recipe plus the teacher and the loss terms."""
  c = RECIPES[dataset](student_arch)
  c.teacher.arch = teacher_arch
  c.teacher.checkpoint = teacher_dir(dataset, teacher_arch)
  c.distill.ce_weight = ce_weight
  with c.distill.unlocked():
    c.distill.terms = ConfigDict({name: dict(spec) for name, spec in terms.items()})
  return c


def kd_terms(weight: float = 0.9, temperature: float = 4.0) -> dict:
  """RepDistiller's KD: 0.1 CE + 0.9 tau^2 KL, tau = 4 (ce_weight set by the caller)."""
  return {'kd': dict(method='kd', weight=weight, temperature=temperature)}
