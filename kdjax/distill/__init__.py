"""Distillation methods: the registry and the Term contract (see `api`)."""

from kdjax.distill.api import (BuildInfo, Context, Needs, Term, build_term, get_method,
                               hyperparameters, merge_needs, register_method,
                               registered_methods, resolve_terms)
from kdjax.distill import methods as _methods  # noqa: F401  registers every method

__all__ = ['BuildInfo', 'Context', 'Needs', 'Term', 'build_term', 'get_method', 'hyperparameters',
           'merge_needs', 'registered_methods', 'register_method', 'resolve_terms']
