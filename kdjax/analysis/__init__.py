"""Analyses of trained runs: what distillation transfers, beyond accuracy.

Pure functions (jitted where they run a network) with formula and source:
  adversarial   PGD / FGSM and the source x target transferability matrix
  similarity    linear / RBF CKA, layer x layer CKA, feature distance, k-means NMI, t-SNE
  sensitivity   active neurons, sharpness (parameter noise), input-noise robustness
  lrp           epsilon-LRP with BN folded (CIFAR ResNets), gradient x input
  probe         linear-probe transfer on frozen penultimate features
  calibration   reliability diagram bins, risk-coverage curve
  curves        train / test curves from metrics.jsonl
Loading runs: `runs`; figures: `plots`; the command: `cli` (`kdjax analyze`).
"""
