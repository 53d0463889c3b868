"""The KD train step in PyTorch, written the way RepDistiller's `train_distill` runs it.

Used only as a speed reference by `cpu_vs_torch.py` and `accelerator.sh` (written
for kdjax's benchmarks, not taken from RepDistiller): the CIFAR post-activation
ResNets resnet{6n+2}x4 (widths 32/64/128/256, BasicBlock, 1x1 conv + BN shortcut
when the shape changes), and one step = teacher forward in eval mode under
`torch.no_grad()`, student forward in train mode, loss = 0.1 CE + 0.9 KD
(Hinton et al. 2015, tau = 4: KL(p_t^tau || p_s^tau) * tau^2, batch mean),
SGD (lr 0.05, momentum 0.9, weight decay 5e-4), `zero_grad / backward / step`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Block(nn.Module):

  def __init__(self, cin, cout, stride):
    super().__init__()
    self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(cout)
    self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(cout)
    self.short = None
    if stride != 1 or cin != cout:
      self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

  def forward(self, x):
    out = F.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    return F.relu(out + (x if self.short is None else self.short(x)))


class CifarResNetX4(nn.Module):
  """resnet{depth}x4: conv3x3(32) -> 3 stages of n blocks (64, 128, 256) -> pool -> fc."""

  def __init__(self, depth: int, num_classes: int = 100):
    super().__init__()
    n = (depth - 2) // 6
    widths = (32, 64, 128, 256)
    self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(widths[0])
    layers, cin = [], widths[0]
    for k, w in enumerate(widths[1:]):
      for i in range(n):
        layers.append(Block(cin, w, 2 if (k > 0 and i == 0) else 1))
        cin = w
    self.layers = nn.Sequential(*layers)
    self.fc = nn.Linear(cin, num_classes)

  def forward(self, x):
    x = F.relu(self.bn1(self.conv1(x)))
    x = self.layers(x)
    return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def kd_loss(s_logits, t_logits, tau: float = 4.0):
  p_t = F.softmax(t_logits / tau, dim=1)
  return F.kl_div(F.log_softmax(s_logits / tau, dim=1), p_t, reduction='batchmean') * tau ** 2


class TorchKDStep:
  """One RepDistiller-style KD step on a fixed synthetic batch; `__call__()` runs it."""

  def __init__(self, *, batch: int = 64, device: str = 'cpu', channels_last: bool = False,
               compile: bool = False, teacher_depth: int = 32, student_depth: int = 8, seed: int = 0):
    torch.manual_seed(seed)
    self.device = torch.device(device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    self.teacher = CifarResNetX4(teacher_depth).to(self.device, memory_format=fmt).eval()
    self.student = CifarResNetX4(student_depth).to(self.device, memory_format=fmt).train()
    self.opt = torch.optim.SGD(self.student.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    self.x = torch.randn(batch, 3, 32, 32, device=self.device).contiguous(memory_format=fmt)
    self.y = torch.randint(0, 100, (batch,), device=self.device)
    self._step = self._eager
    if compile:
      self._step = torch.compile(self._eager)

  def _eager(self):
    with torch.no_grad():
      t_logits = self.teacher(self.x)
    s_logits = self.student(self.x)
    loss = 0.1 * F.cross_entropy(s_logits, self.y) + 0.9 * kd_loss(s_logits, t_logits)
    self.opt.zero_grad()
    loss.backward()
    self.opt.step()
    return loss

  def __call__(self):
    loss = self._step()
    if self.device.type == 'cuda':
      torch.cuda.synchronize()
    return loss
