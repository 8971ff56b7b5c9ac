"""Stage 5 — cache: one transform per code object and closure layout.

Keyed weakly on the code object (so a function that dies frees its entry) and then on the closure
layout (the names of its free variables); tracing is cached separately, per structure, by the
runtime's ``Step``.  ``TRANSFORMS`` counts real transforms (parse -> load) for tests and benchmarks.
"""
import threading
import weakref

_cache = weakref.WeakKeyDictionary()
# Held while transforming too: CPython's ast module is not safe to use from several threads at
# once, and a transform costs milliseconds.
_lock = threading.RLock()
TRANSFORMS = [0]


def get_or_make(fn, make, options_key):
    code = fn.__code__
    key = (code.co_freevars, options_key, id(fn.__globals__))
    with _lock:
        per_code = _cache.get(code)
        if per_code is not None and key in per_code:
            return per_code[key]
        result = make()
        TRANSFORMS[0] += 1
        _cache.setdefault(code, {})[key] = result
        return result


def clear():
    with _lock:
        _cache.clear()
