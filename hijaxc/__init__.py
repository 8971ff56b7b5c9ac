"""hijaxc: hijax semantics (mutable Variables that survive ``jit``) on a plain ``jax.jit``, by
compiling Python source to source.

    @hijaxc.jit
    def train_step(model, optimizer, x, y): ...

``hijaxc.show(train_step)`` prints the generated code.  The runtime (Variables, mode flags, Refs,
split/merge/write-back) is ``hijaxc.runtime`` and is re-exported here.
"""
import importlib.util as _ilu
import os as _os
import sys as _sys

try:  # installed: pyproject maps the top-level folder runtime/ to the package hijaxc.runtime
    from . import runtime
except ImportError:  # a source checkout on sys.path without installation: map it here
    _dir = _os.path.join(_os.path.dirname(_os.path.dirname(_os.path.abspath(__file__))), "runtime")
    _spec = _ilu.spec_from_file_location(__name__ + ".runtime", _os.path.join(_dir, "__init__.py"),
                                         submodule_search_locations=[_dir])
    runtime = _ilu.module_from_spec(_spec)
    _sys.modules[_spec.name] = runtime
    _spec.loader.exec_module(runtime)

from .api import JitFunction, cached_partial, jit, make_jaxpr, show
from .runtime import (
    AliasingError,
    BatchStat,
    HijaxcError,
    ImmutableVariableError,
    InvalidValueError,
    Param,
    Ref,
    SourceUnavailableError,
    TracerLeakError,
    UnsupportedSyntaxError,
    Variable,
    find_duplicates,
    to_hijax,
    to_lojax,
    use_hijax,
    var_defaults,
    vars_as,
    with_vars,
)
from .runtime.explain import CacheInfo, RetraceWarning

__all__ = [
    "jit", "cached_partial", "show", "make_jaxpr", "JitFunction",
    "Variable", "Param", "BatchStat", "Ref",
    "var_defaults", "use_hijax", "vars_as", "with_vars", "to_hijax", "to_lojax",
    "find_duplicates", "HijaxcError", "ImmutableVariableError", "AliasingError",
    "UnsupportedSyntaxError", "SourceUnavailableError", "TracerLeakError", "InvalidValueError",
    "CacheInfo", "RetraceWarning",
]
__version__ = "0.1.0"
