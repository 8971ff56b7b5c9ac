"""Which object does traced code see?  The discovery protocol.

Code that hijaxc converted reads its own globals and closure cells through ``view`` (generated
code calls ``foreign`` / ``foreign_cell``) and gets the trace's copy of a caller's object the step
threads.  State the step does not thread yet makes the step learn where it lives (a ``Place``) and
trace again (``Rediscover``); state a transform body reads that its capture lacks makes the
transform capture it and trace again (``Uncaptured``).  Both are BaseExceptions caught by hijaxc
itself, so that user code's ``except Exception`` cannot swallow them."""
import contextlib
from typing import Any, NamedTuple, Union

from .reach import holds_caller_state
from .writelog import stack


class GlobalPlace(NamedTuple):
    """A name in a function's globals."""

    globals: dict
    name: str

    def read(self, missing):
        return self.globals.get(self.name, missing)

    def key(self):
        return ("g", id(self.globals), self.name)


class CellPlace(NamedTuple):
    """A closure cell."""

    cell: Any

    def read(self, missing):
        try:
            return self.cell.cell_contents
        except ValueError:  # an empty cell: not yet assigned (the body raises NameError)
            return missing

    def key(self):
        return ("c", id(self.cell))


Place = Union[GlobalPlace, CellPlace]


class Rediscover(BaseException):
    """Code running in a trace reached state the step does not thread yet, through a converted
    function's own globals or closure cells; the step adds that place to its roots and traces
    again.  ``step`` is the step that must retrace (an outer one, for a nested ``hijaxc.jit``)."""

    def __init__(self, step):
        super().__init__()
        self.step = step


class Uncaptured(BaseException):
    """A transform body, while traced, read state its capture does not hold (a step's copy a
    converted helper reached through its own globals); the transform captures ``value`` too and
    traces again."""

    def __init__(self, capture, value):
        super().__init__()
        self.capture, self.value = capture, value


@contextlib.contextmanager
def watching(capture):
    caps = stack.captures
    caps.append((capture, len(stack.frames)))
    try:
        yield
    finally:
        caps.pop()


def view(value: Any, place: Place = None) -> Any:
    """What code running in a trace sees for ``value``, read from ``place`` (None when unknown):
    the trace's copy of a caller's object the step threads; for state it does not thread yet, the
    step learns ``place`` and traces again.

    With nested steps (a ``hijaxc.jit`` called while another traces) the value is mapped through
    every step's copies, outermost first; the first step that neither threads it nor owns it is the
    one that learns it (the outermost for the caller's own objects)."""
    frames = stack.frames
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
        if k in ctx.fresh or k in ctx.created or place is None or ctx.discover is None:
            continue
        if holds_caller_state(value, ctx, frames[:i]) and ctx.discover(place):
            raise Rediscover(ctx.owner)
    if stack.captures:
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
    frames = stack.frames
    depth = len(frames)
    if not depth or id(value) not in frames[-1].fresh:
        return
    for cap, d in stack.captures:  # outermost first: an outer loop threads what an inner writes
        if d == depth and not cap.holds(value):
            raise Uncaptured(cap, value)


def foreign(value, g, name):
    """A converted function's read of its global ``name`` (generated code)."""
    return view(value, GlobalPlace(g, name)) if stack.frames else value


def foreign_cell(value, cells, name):
    """A converted function's read of its closure variable ``name`` (generated code)."""
    return view(value, CellPlace(cells[name])) if stack.frames else value
