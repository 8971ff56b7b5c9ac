"""Finding the user's ``file:line`` for error messages: the innermost frame that is neither
hijaxc's nor a library's."""
import linecache
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
        elif (not fn.startswith(skip) and not any(m in fn for m in _LIB_MARKERS)
              and not fn.startswith("<frozen")):
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


def note_user_lines(e: BaseException) -> None:
    """Add the user's ``file:line`` for every generated frame in the traceback (PEP 678 notes),
    so the error points at the user's source, not only at the generated file."""
    if getattr(e, "_hijaxc_noted", False) or not hasattr(e, "add_note"):
        return
    lines = []
    tb = e.__traceback__
    while tb is not None:
        where = _ORIGINS.get(tb.tb_frame.f_code.co_filename, {}).get(tb.tb_lineno)
        if where:
            path, _, line = where.rpartition(":")
            src = _source_line(path, line)
            lines.append(f'  File "{path}", line {line}, in {tb.tb_frame.f_code.co_name} '
                         "(compiled by hijaxc)" + (f"\n    {src}" if src else ""))
        tb = tb.tb_next
    if lines:
        e.add_note("hijaxc: raised while running compiled user code:\n" + "\n".join(lines))
    if type(e).__name__ == "UnexpectedTracerError":
        e.add_note("hijaxc: a Variable probably kept a value traced inside a JAX transform that "
                   "hijaxc did not rewrite (e.g. a helper defined elsewhere calling jax.lax.scan); "
                   "call the transform in the hijaxc.jit function itself, or pass and return the "
                   "state explicitly.")
    try:
        e._hijaxc_noted = True
    except Exception:
        pass


def _source_line(path, line):
    try:
        return linecache.getline(path, int(line)).strip()
    except ValueError:
        return ""
