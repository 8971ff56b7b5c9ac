"""The trace-time context of the step being traced (thread-local).

Variables report writes here while a ``hijaxc.jit`` step is traced, so the write-back can warn, at
the user's line, when a write to a lojax Variable is dropped (S2)."""
import threading

from . import location


class _Stack(threading.local):
    def __init__(self):
        self.frames = []


_stack = _Stack()


class StepContext:
    __slots__ = ("writes",)

    def __init__(self):
        self.writes = {}  # id(variable) -> "file:line" of the last write

    def __enter__(self):
        _stack.frames.append(self)
        return self

    def __exit__(self, *exc):
        _stack.frames.pop()
        return False


def tracing():
    return bool(_stack.frames)


def on_write(variable):
    frames = _stack.frames
    if frames:
        frames[-1].writes[id(variable)] = location.user_location(2)
