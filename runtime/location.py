"""Finding the user's ``file:line`` for error messages: the innermost frame that is neither
hijaxc's nor a library's."""
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
_SKIP = (
    _HERE,
    os.path.join(os.path.dirname(_HERE), "hijaxc"),
)
_LIB_MARKERS = (os.sep + "jax" + os.sep, os.sep + "jaxlib" + os.sep, os.sep + "flax" + os.sep,
                os.sep + "optax" + os.sep, os.sep + "contextlib.py", os.sep + "functools.py")


def user_location(depth=1):
    """``"file:line"`` of the innermost user frame.  Generated code is mapped back to the user's
    line via the origin table the loader registers (``register_origin``)."""
    f = sys._getframe(depth)
    skip = _skip_dirs()
    while f is not None:
        fn = f.f_code.co_filename
        if fn in _ORIGINS:
            mapped = _ORIGINS[fn].get(f.f_lineno)
            if mapped:
                return mapped
        elif not fn.startswith(skip) and not any(m in fn for m in _LIB_MARKERS) and not fn.startswith("<frozen"):
            return f"{fn}:{f.f_lineno}"
        f = f.f_back
    return "<unknown>:0"


_ORIGINS = {}


def _skip_dirs():
    # hijaxc's own package, wherever it was imported from (an installed copy, a source checkout)
    pkg = sys.modules.get("hijaxc")
    f = getattr(pkg, "__file__", None)
    return _SKIP + ((os.path.dirname(os.path.abspath(f)),) if f else ())


def register_origin(generated_filename, line_map):
    """``line_map``: generated line -> ``"user_file:line"``."""
    _ORIGINS[generated_filename] = line_map
