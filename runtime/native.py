"""The optional C extension ``_speedups`` (runtime/_speedups.c): the steady-state call and its
per-Variable passes, and the plan box's unflatten, without Python frames.

``module()`` is the extension, or None where it was not built (no compiler at install time) or
``HIJAXC_PURE_PYTHON=1`` asks for the Python code paths, which do the same.
"""
import os
from types import ModuleType


def module() -> ModuleType | None:
    if os.environ.get("HIJAXC_PURE_PYTHON"):
        return None
    try:
        from . import _speedups
    except ImportError:
        return None
    return _speedups
