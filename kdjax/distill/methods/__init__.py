"""The method index: one module per method (or per paper), each registering its builders.

Every module holds, in order: the formula and source (module docstring), the
pure loss functions, the trainable modules and the registered builder(s).
Imported explicitly here (no import side effects elsewhere).
"""

from kdjax.distill.methods import ab  # noqa: F401
from kdjax.distill.methods import at  # noqa: F401
from kdjax.distill.methods import bss  # noqa: F401
from kdjax.distill.methods import cc  # noqa: F401
from kdjax.distill.methods import crd  # noqa: F401
from kdjax.distill.methods import dkd  # noqa: F401
from kdjax.distill.methods import dml  # noqa: F401
from kdjax.distill.methods import fitnet  # noqa: F401
from kdjax.distill.methods import fsp  # noqa: F401
from kdjax.distill.methods import ft  # noqa: F401
from kdjax.distill.methods import ie_kd  # noqa: F401
from kdjax.distill.methods import ipwd  # noqa: F401
from kdjax.distill.methods import kd  # noqa: F401
from kdjax.distill.methods import nst  # noqa: F401
from kdjax.distill.methods import ofd  # noqa: F401
from kdjax.distill.methods import one  # noqa: F401
from kdjax.distill.methods import pkt  # noqa: F401
from kdjax.distill.methods import pskd  # noqa: F401
from kdjax.distill.methods import rkd  # noqa: F401
from kdjax.distill.methods import self_guidance  # noqa: F401
from kdjax.distill.methods import sp  # noqa: F401
from kdjax.distill.methods import srrl  # noqa: F401
from kdjax.distill.methods import stochastic_depth  # noqa: F401
from kdjax.distill.methods import tfkd  # noqa: F401
from kdjax.distill.methods import vid  # noqa: F401
from kdjax.distill.methods import wsld  # noqa: F401
