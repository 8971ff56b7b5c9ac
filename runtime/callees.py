"""Calls from compiled code into the user's other functions (trace time only).

The compiler rewrites the decorated function; the functions *it* calls — a Module's ``__call__``,
a method running ``jax.lax.fori_loop`` over ``self``'s Variables, a helper running ``jax.grad`` —
are the user's code too, and their JAX transforms must thread state the same way.  Generated code
therefore routes calls whose target it cannot prove to be library code through ``callee``::

    y = model(x)                ->   y = __hx.callee(model)(x)
    self.bump()                 ->   __hx.callee(self.bump)()

``callee(f)`` returns ``f`` itself for anything that is not a Python function defined in user code
(builtins, JAX, Flax, NumPy, the standard library, code hijaxc already generated; except the few
library functions that only call the user's callables, ``LIBRARY_COMBINATORS`` such as
``nnx.Sequential.__call__``), and otherwise
the *converted* function: the same source rewritten by the compiler (transforms redirected to the
runtime, explicit mutations located, its own calls routed here), bound to the same globals, closure
cells and ``self``.  Conversion is cached per code object, so it costs one parse per user function
per process, at the first trace; the compiled step never runs Python, so steady-state calls are
untouched.  Functions that cannot be converted (no source, generators) are called as they are.

The runtime never imports the compiler: the compiler registers its converter with
:func:`set_converter` when it is imported.
"""
import functools
import os
import sys
import sysconfig
import types

from flax import nnx

_converter = [None]  # fn -> converted FunctionType, or None when it cannot/need not be converted


def set_converter(fn):
    _converter[0] = fn


def _library_roots():
    roots = set()
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        try:
            p = sysconfig.get_paths()[key]
        except KeyError:
            continue
        roots.add(os.path.realpath(p) + os.sep)
    for p in sys.path:  # site-packages of virtual environments that sysconfig does not name
        if p.endswith(("site-packages", "dist-packages")):
            roots.add(os.path.realpath(p) + os.sep)
    here = os.path.dirname(os.path.realpath(__file__))
    roots.add(here + os.sep)  # the runtime itself
    roots.add(os.path.join(os.path.dirname(here), "hijaxc") + os.sep)  # the compiler (checkout)
    return tuple(sorted(roots))


_NEVER = (types.BuiltinFunctionType, types.BuiltinMethodType, types.MethodWrapperType,
          types.WrapperDescriptorType, types.MethodDescriptorType, types.ClassMethodDescriptorType)
_LIBRARY = _library_roots()
_user_file = {}  # co_filename -> bool


def is_user_code(code):
    """Whether ``code`` comes from a file of the user's (not a library, not generated code)."""
    fname = code.co_filename
    known = _user_file.get(fname)
    if known is None:
        if fname.startswith("<"):  # <hijaxc generated ...>, <stdin>, <string>: no source to convert
            known = False
        else:
            known = not os.path.realpath(fname).startswith(_LIBRARY)
        _user_file[fname] = known
    return known


#: Library functions whose job is to call the user's callables (``nnx.Sequential.__call__`` calls
#: its layers): compiled code converts them like user code, so that the layers they call are
#: converted too and a layer's own JAX transforms thread its state.
LIBRARY_COMBINATORS = tuple(
    f for f in (getattr(getattr(nnx, "Sequential", None), "__call__", None),)  # noqa: B004
    if isinstance(f, types.FunctionType))
_COMBINATORS = frozenset(f.__code__ for f in LIBRARY_COMBINATORS)


def _function(fn):
    if not is_user_code(fn.__code__) and fn.__code__ not in _COMBINATORS:
        return None
    conv = _converter[0]
    return conv(fn) if conv is not None else None


def convert(f):
    """``f``, or the converted version of the user function it calls (see the module docstring)."""
    t = type(f)
    if t is types.FunctionType:
        g = _function(f)
        return f if g is None else g
    if t is types.MethodType:
        func = f.__func__
        if type(func) is types.FunctionType:
            g = _function(func)
            if g is not None:
                return types.MethodType(g, f.__self__)
        return f
    if t in _NEVER or isinstance(f, type):
        return f
    if t is functools.partial:
        g = convert(f.func)
        return f if g is f.func else functools.partial(g, *f.args, **f.keywords)
    call_ = getattr(t, "__call__", None)  # noqa: B004  (a callable object: its class's __call__)
    if type(call_) is types.FunctionType:
        g = _function(call_)
        if g is not None:
            return types.MethodType(g, f)
    return f


callee = convert  # the name generated code uses: ``__hx.callee(f)(*args)``
