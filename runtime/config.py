"""Mode flags: the defaults new Variables take (``hijax``, ``ref``).

``var_defaults()`` reads them; ``var_defaults(hijax=..., ref=...)`` sets them at once and also
works as a context manager (restoring the previous values on exit) and as a decorator (setting
them for the duration of each call).  ``use_hijax(flag)`` is the same for ``hijax`` alone.
hijaxc's default is ``hijax=True``: a Variable is passed by reference unless you say otherwise.
"""
import functools
import threading
from typing import NamedTuple

from . import _adapter


class VarDefaults(NamedTuple):
    hijax: bool
    ref: bool


class _State(threading.local):
    def __init__(self):
        self.value = VarDefaults(hijax=True, ref=False)


_state = _State()


def current():
    return _state.value


class _Setting:
    """Returned by a setting call: already in effect; restores on ``__exit__``; decorates."""

    def __init__(self, previous, new):
        self._previous, self._new = previous, new

    # reading the returned object gives the new defaults, like ``var_defaults()``
    hijax = property(lambda self: self._new.hijax)
    ref = property(lambda self: self._new.ref)

    def __iter__(self):
        return iter(self._new)

    def __eq__(self, other):
        return tuple(self._new) == tuple(other)

    def __repr__(self):
        return repr(self._new)

    def __enter__(self):
        return self._new

    def __exit__(self, *exc):
        _state.value = self._previous
        _bump()
        return False

    def __call__(self, fn):
        new = self._new
        # A decorator does not change the defaults outside the decorated function.
        _state.value = self._previous

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            previous = _state.value
            _state.value = new
            _bump()
            try:
                return fn(*args, **kwargs)
            finally:
                _state.value = previous
                _bump()

        return wrapper


def var_defaults(*, hijax=None, ref=None):
    """Read (no arguments) or set the defaults new Variables take."""
    if hijax is None and ref is None:
        return _state.value
    previous = _state.value
    new = VarDefaults(previous.hijax if hijax is None else bool(hijax),
                      previous.ref if ref is None else bool(ref))
    _state.value = new
    _bump()
    return _Setting(previous, new)


def use_hijax(flag):
    """``var_defaults(hijax=flag)`` under the name seed 001 uses."""
    return var_defaults(hijax=flag)


def _bump():
    # the mode of NNX Variables follows the defaults: a change must invalidate cached structures
    _adapter.EPOCH[0] += 1
