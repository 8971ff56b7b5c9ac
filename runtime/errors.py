"""Errors raised by hijaxc.  Every message names the object (by path where one is known) and the
user's ``file:line``."""


class HijaxcError(Exception):
    """Base class of every error hijaxc raises on purpose."""


class ImmutableVariableError(HijaxcError):
    """A write to a Variable created or converted with ``mutable=False``."""


class AliasingError(HijaxcError):
    """One Variable/Ref/Module reached through several paths while ``aliasing="error"``."""


class UnsupportedSyntaxError(HijaxcError, SyntaxError):
    """Source that hijaxc cannot compile (generators, async, rebinding a threaded global...)."""

    def __init__(self, msg, filename=None, lineno=None):
        where = f"{filename}:{lineno}: " if filename else ""
        super().__init__(f"{where}{msg}")
        self.msg = f"{where}{msg}"
        self.filename, self.lineno = filename, lineno


class SourceUnavailableError(HijaxcError):
    """The source of a function cannot be found (raised only where no fallback exists)."""


class TracerLeakError(HijaxcError):
    """A traced value would escape the ``hijaxc.jit`` call it belongs to."""


class InvalidValueError(HijaxcError, TypeError):
    """A value that cannot live in a Variable inside a step (a non-array), or bad flags."""
