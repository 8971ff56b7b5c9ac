"""The write log of the steps being traced (thread-local).

Variables report their writes and creations here while a ``hijaxc.jit`` step is traced, so that
the write-back can warn at the user's line when a write to a lojax Variable is dropped (S2), and
the step can put back Variables it does not own that were written with tracers (S6)."""
import threading

from . import location


class _Stack(threading.local):
    def __init__(self):
        self.frames = []  # StepContexts of the steps being traced, outermost first
        # (capture, number of step frames when it began) of the transform bodies being traced,
        # outermost first; a capture concerns the objects of the step being traced when it began
        self.captures = []


stack = _Stack()


class StepContext:
    """One step being traced: its write log and what ``discovery.view`` needs."""

    __slots__ = ("writes", "touched", "created", "copies", "fresh", "discover", "owner")

    def __init__(self):
        self.writes = {}  # id(variable) -> "file:line" of the last write
        self.touched = {}  # id(variable) -> (variable, raw value before the first write)
        self.created = set()  # ids of Variables created while tracing
        self.copies = {}  # id(caller's object) -> its trace-owned copy
        self.fresh = ()  # ids of the trace-owned copies
        self.discover = None  # place -> True if the step did not thread it yet (then retrace)
        self.owner = None  # the step being traced

    def __enter__(self):
        stack.frames.append(self)
        return self

    def __exit__(self, *exc):
        stack.frames.pop()
        return False


def tracing() -> bool:
    return bool(stack.frames)


def current():
    frames = stack.frames
    return frames[-1] if frames else None


def on_write(variable, old_raw=None) -> None:
    frames = stack.frames
    if frames:
        ctx = frames[-1]
        ctx.writes[id(variable)] = location.user_location(2)
        if id(variable) not in ctx.touched:
            ctx.touched[id(variable)] = (variable, old_raw)


def on_create(variable) -> None:
    frames = stack.frames
    if frames:
        frames[-1].created.add(id(variable))
