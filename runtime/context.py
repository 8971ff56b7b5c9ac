"""The trace-time context of the step being traced (thread-local).

Variables report writes here while a ``hijaxc.jit`` step is traced, so the write-back can warn, at
the user's line, when a write to a lojax Variable is dropped (S2).

It also answers "which object does traced code see?" (``view``): code that hijaxc converted reads
its own globals and closure cells through it, and gets the trace's copy of a caller's object the
step threads.  State the step does not thread yet makes the step learn where it lives and trace
again (``Rediscover``); state a transform body reads that its capture lacks makes the transform
capture it and trace again (``Uncaptured``).  Both are BaseExceptions caught by hijaxc itself."""
import contextlib
import threading

from . import location


class _Stack(threading.local):
    def __init__(self):
        self.frames = []  # StepContexts of the steps being traced, outermost first
        # (capture, number of step frames when it began) of the transform bodies being traced,
        # outermost first; a capture concerns the objects of the step being traced when it began
        self.captures = []


_stack = _Stack()


class Rediscover(BaseException):
    """Internal: code running in a trace reached state the step does not thread yet, through a
    converted function's own globals or closure cells; the step adds that place to its roots and
    traces again (a BaseException, so that user code's ``except Exception`` cannot swallow it).
    ``step`` is the step that must retrace (an outer one, for a nested ``hijaxc.jit``)."""

    def __init__(self, step):
        super().__init__()
        self.step = step


class Uncaptured(BaseException):
    """Internal: a transform body, while traced, read state its capture does not hold (a step's
    copy a converted helper reached through its own globals); the transform captures ``value``
    too and traces again."""

    def __init__(self, capture, value):
        super().__init__()
        self.capture, self.value = capture, value


@contextlib.contextmanager
def watching(capture):
    caps = _stack.captures
    caps.append((capture, len(_stack.frames)))
    try:
        yield
    finally:
        caps.pop()


class StepContext:
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


def view(value, place):
    """What code running in a trace sees for ``value``, read from ``place`` (``("g", globals,
    name)``, ``("c", cell)``, or None when unknown): the trace's copy of a caller's object the step
    threads; for state it does not thread yet, the step learns ``place`` and traces again.

    With nested steps (a ``hijaxc.jit`` called while another traces) the value is mapped through
    every step's copies, outermost first; the first step that neither threads it nor owns it is the
    one that learns it (the outermost for the caller's own objects)."""
    frames = _stack.frames
    if not frames:
        return value
    for i, ctx in enumerate(frames):
        k = id(value)
        copy = ctx.copies.get(k)
        if copy is None and isinstance(value, tuple):
            copy = _mapped_tuple(value, ctx.copies)
        if copy is not None:
            value = copy
            continue
        if k in ctx.fresh or k in ctx.created:
            continue
        if place is None or ctx.discover is None:
            continue
        from .transforms import _holds_caller_state

        if _holds_caller_state(value, ctx, frames[:i]) and ctx.discover(place):
            raise Rediscover(ctx.owner)
    if _stack.captures:
        _check_captures(value)
    return value


def _mapped_tuple(t, copies):
    """``t`` (a tuple or namedtuple, nested ones too) rebuilt over the trace's copies of the
    objects it holds; None when it holds none of them.  Tuples are immutable values, not objects
    the step threads, so a converted function reading one gets an equal tuple of copies."""
    items = []
    mapped = False
    for y in t:
        c = copies.get(id(y))
        if c is None and isinstance(y, tuple):
            c = _mapped_tuple(y, copies)
        mapped = mapped or c is not None
        items.append(y if c is None else c)
    if not mapped:
        return None
    return type(t)(*items) if hasattr(t, "_fields") else type(t)(items)


def _check_captures(value):
    """A copy owned by the innermost step being traced, read in transform bodies (of that step)
    whose captures lack it: the outermost such transform must capture it and trace again."""
    frames = _stack.frames
    depth = len(frames)
    if not depth or id(value) not in frames[-1].fresh:
        return
    for cap, d in _stack.captures:  # outermost first: an outer loop threads what an inner writes
        if d == depth and not cap.holds(value):
            raise Uncaptured(cap, value)


def foreign(value, g, name):
    """A converted function's read of its global ``name`` (generated code)."""
    return view(value, ("g", g, name)) if _stack.frames else value


def foreign_cell(value, cells, name):
    """A converted function's read of its closure variable ``name`` (generated code)."""
    return view(value, ("c", cells[name])) if _stack.frames else value
