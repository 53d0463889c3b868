"""Test-session settings.

A persistent XLA compilation cache shared by the test processes: many tests
compile the same small programs (a resnet8 digits step, its evaluation), and
on 2 CPU cores compiling dominates their run time.
"""

import os
import tempfile

import kdjax  # noqa: F401  (first: sets kdjax's XLA CPU options before any backend starts)
import jax

_CACHE = os.environ.get('KDJAX_TEST_COMPILE_CACHE',
                        os.path.join(tempfile.gettempdir(), 'kdjax-test-xla-cache'))
jax.config.update('jax_compilation_cache_dir', _CACHE)
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)
jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)
