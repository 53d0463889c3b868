"""Every registered method, imported explicitly (no import side effects elsewhere)."""

from kdjax.distill.methods import basic  # noqa: F401
from kdjax.distill.methods import online  # noqa: F401
from kdjax.distill.methods import ie_kd  # noqa: F401
from kdjax.distill.methods import self_guidance  # noqa: F401
from kdjax.distill.methods import srrl  # noqa: F401
from kdjax.distill.methods import pskd  # noqa: F401
from kdjax.distill.methods import ipwd  # noqa: F401
from kdjax.distill.methods import fitnet  # noqa: F401
from kdjax.distill.methods import ab  # noqa: F401
from kdjax.distill.methods import ft  # noqa: F401
from kdjax.distill.methods import vid  # noqa: F401
from kdjax.distill.methods import ofd  # noqa: F401
from kdjax.distill.methods import cc  # noqa: F401
from kdjax.distill.methods import crd  # noqa: F401
from kdjax.distill.methods import dist  # noqa: F401
from kdjax.distill.methods import logit_stand  # noqa: F401
from kdjax.distill.methods import kd_la  # noqa: F401
from kdjax.distill.methods import kdsvd  # noqa: F401
from kdjax.distill.methods import reviewkd  # noqa: F401
