"""hijaxc's runtime: Variables, mode flags, Refs, split/merge/write-back, aliasing checks.

Generated code imports only this package (as ``__hx``); it never imports the compiler.
"""
from . import _adapter, flax_patches, step, transforms  # noqa: F401  (step: the compiler's entry)
from .callees import callee  # noqa: F401  (generated code: ``__hx.callee(f)(*args)``)
from .config import use_hijax, var_defaults
from .convert import find_duplicates, to_hijax, to_lojax, vars_as, with_vars
from .discovery import foreign, foreign_cell  # noqa: F401  (generated code of converted callees)
from .errors import (
    AliasingError,
    HijaxcError,
    ImmutableVariableError,
    InvalidValueError,
    SourceUnavailableError,
    TracerLeakError,
    UnsupportedSyntaxError,
)
from .transforms import *  # noqa: F401,F403  (scan, fori_loop, ... used by generated code)
from .variables import BatchStat, Param, Ref, Variable

flax_patches.install(Variable)


def setitem(obj, idx, value, where):
    """``obj[idx] = value`` as generated code writes it, with the user's line for errors."""
    if isinstance(obj, Variable):
        obj._write(idx, value, where)
    elif not (idx is Ellipsis and _adapter.write_whole_traced(obj, value)):
        obj[idx] = value


__all__ = [
    "Variable", "Param", "BatchStat", "Ref", "var_defaults", "use_hijax", "vars_as", "with_vars",
    "to_hijax", "to_lojax", "find_duplicates", "HijaxcError", "ImmutableVariableError",
    "AliasingError", "UnsupportedSyntaxError", "SourceUnavailableError", "TracerLeakError",
    "InvalidValueError",
]
