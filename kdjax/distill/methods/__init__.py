"""The method index: one module per method (or per paper), each registering its builders.

Every module holds, in order: the formula and source (module docstring), the
pure loss functions, the trainable modules and the registered builder(s).
Every module of this package is imported here, in name order, so adding a
method is adding its file (no other library file changes).
"""

import importlib
import pkgutil

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
  importlib.import_module(f'{__name__}.{_module}')
