"""PyTorch interop: import published teachers, export students (torch is optional).

  kdjax import-torch --arch resnet32x4 --checkpoint ckpt_epoch_240.pth --dataset cifar100 \
      --workdir DIR
  kdjax export --workdir DIR --output student.pth --format torch

Modules: `mapping` (per-family naming rules), `torch_io` (state_dict <-> variables,
strict), `workdir` (a kdjax workdir from given weights), `api` (the two commands).
Only `torch_io.load_state_dict` / `save_state_dict` import torch.
"""
