"""Experiment configs: one module per paper or protocol (see `kdjax config list`)."""
