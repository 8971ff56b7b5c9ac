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
    __slots__ = ("writes", "touched", "created")

    def __init__(self):
        self.writes = {}  # id(variable) -> "file:line" of the last write
        self.touched = {}  # id(variable) -> (variable, raw value before the first write)
        self.created = set()  # ids of Variables created while tracing

    def __enter__(self):
        _stack.frames.append(self)
        return self

    def __exit__(self, *exc):
        _stack.frames.pop()
        return False


def tracing():
    return bool(_stack.frames)


def on_write(variable, old_raw=None):
    frames = _stack.frames
    if frames:
        ctx = frames[-1]
        ctx.writes[id(variable)] = location.user_location(2)
        if id(variable) not in ctx.touched:
            ctx.touched[id(variable)] = (variable, old_raw)


def on_create(variable):
    frames = _stack.frames
    if frames:
        frames[-1].created.add(id(variable))


def current():
    frames = _stack.frames
    return frames[-1] if frames else None
