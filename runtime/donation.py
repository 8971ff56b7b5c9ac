"""Donation (S9): the buffers of written-back state are donated when the Variable holds the only
reference, so a step's peak memory matches a hand-written step with ``donate_argnums``; an array
the user still holds is never donated."""
import sys
from itertools import compress, islice
from typing import Callable, Iterator, NamedTuple, Sequence

import jax

from . import _adapter
from .spec import Leaf, VarSpec

_getrefcount = sys.getrefcount
ArrayImpl = _adapter.ArrayImpl


def donatable(objects_spec: Sequence) -> list:
    """Leaf indices of the hijax, mutable Variables (the written-back ones)."""
    return [c.value.index for c in objects_spec
            if type(c) is VarSpec and c.mode.hijax and c.mode.mutable and type(c.value) is Leaf]


def ref_counts(picked: Callable[[], Iterator]) -> bytes:
    """The reference counts of the values ``picked()`` iterates over (each held by a list), as
    ``bytes`` capped at 255: such a value is held elsewhere anyway."""
    try:
        return bytes(map(_getrefcount, picked()))
    except ValueError:
        return bytes(min(c, 255) for c in map(_getrefcount, picked()))


def _sole_holder_count() -> int:
    """What ``ref_counts`` reads for a value held by nothing but one slot and the list it is
    picked from (measured, not assumed: the temporaries an iterator holds differ between Python
    versions)."""
    slot = [object()]
    leaves = [slot[0]]
    counts = {ref_counts(lambda: islice(leaves, 1))[0],
              ref_counts(lambda: map(leaves.__getitem__, [0]))[0]}
    assert len(counts) == 1, counts
    return counts.pop()


SOLE_HOLDER = _sole_holder_count()
is_sole_holder = SOLE_HOLDER.__ge__  # count -> the leaf is held by its Variable alone


def mask(objects_spec: Sequence, leaves: Sequence) -> tuple:
    """The donatable leaves held only by their Variable's slot (and ``leaves``)."""
    arrays = [i for i in donatable(objects_spec) if type(leaves[i]) is ArrayImpl]
    return tuple(compress(arrays, map(is_sole_holder,
                                      ref_counts(lambda: map(leaves.__getitem__, arrays)))))


class Compiled(NamedTuple):
    """One donation mask's compiled step, called ``jitted(donated, kept)`` with ``pack``'s two
    lists: the leaves it donates, and the others, each in leaf order.

    Two lists rather than one positional argument per leaf: ``jax.jit`` flattens each positional
    argument into a pytree definition of its own and compares each with its cache's on every
    call -- with 1,000 leaves, 1,000 of them per call (measured under cachegrind: 1.3 % more
    instructions and 2.5 % more cache misses than the same call with one list)."""
    jitted: Callable
    mask: tuple         # the leaf indices donated, ascending
    split_at: int       # len(mask) where the mask is the leaves 0 .. len(mask) - 1, else -1
    kept: tuple         # the other leaf indices (for a mask that is not such a prefix)


def pack(c: Compiled, leaves: list) -> tuple[list, list]:
    """``(donated, kept)``: ``leaves`` as ``c.jitted`` takes them."""
    k = c.split_at
    if k == len(leaves):
        return leaves, []
    if k >= 0:
        return leaves[:k], leaves[k:]
    return [leaves[i] for i in c.mask], [leaves[i] for i in c.kept]


def _unpacking(entry, mask: tuple) -> Callable:
    """``entry.pure(*leaves)`` called as ``c.jitted`` calls it (the inverse of ``pack``).  Through
    ``entry.traced``, one nested ``jax.jit`` of the pure step per structure, so that the user's
    function is traced once for all masks (and every mask's step returns the same plan object,
    which the steady state compares by identity).  XLA inlines the nested call when compiling;
    ``inline=True`` would inline it when tracing, but fails inside jax 0.10 on flax's hijax
    Variables (an internal AssertionError)."""
    if entry.traced is None:
        entry.traced = jax.jit(entry.pure)
    traced, donated_at = entry.traced, frozenset(mask)

    def unpacked(donated, kept):
        d, k = iter(donated), iter(kept)
        return traced(*[next(d) if i in donated_at else next(k)
                        for i in range(len(donated) + len(kept))])

    unpacked.__name__ = getattr(entry.pure, "__name__", "pure_step")  # jax.jit names the program
    unpacked.__qualname__ = getattr(entry.pure, "__qualname__", unpacked.__name__)
    return unpacked


def compiled_for(entry, mask_: tuple, n_leaves: int, jit_kwargs: dict) -> Compiled:
    """The compiled step for a donation mask, kept in ``entry.jitted``: a new one, or one that
    donates a subset of ``mask_`` (always safe, saves a compile when e.g. the first call could
    donate less than later ones)."""
    c = entry.jitted.get(mask_)
    if c is None:
        c = entry.jitted[mask_] = _compile(entry, mask_, n_leaves, jit_kwargs)
    return c


def _compile(entry, mask_: tuple, n_leaves: int, jit_kwargs: dict) -> Compiled:
    best = None
    allowed = set(mask_)
    for m, c in entry.jitted.items():
        if (best is None or len(m) > len(best.mask)) and allowed.issuperset(m):
            best = c
    if best is not None:
        return best
    prefix = mask_ == tuple(range(len(mask_)))
    kept = () if prefix else tuple(i for i in range(n_leaves) if i not in allowed)
    jitted = jax.jit(_unpacking(entry, mask_), donate_argnums=(0,) if mask_ else (), **jit_kwargs)
    return Compiled(jitted, mask_, len(mask_) if prefix else -1, kept)


def note_lost(e: BaseException, name: str, leaves: Sequence, mask_: tuple) -> None:
    """A step that fails while executing, after XLA consumed its donated inputs, cannot restore
    them: the Variables that held them now hold deleted arrays (S6 yields to S9 here; there is no
    copy to go back to without doubling the state's memory).  Say so, and how to avoid it, rather
    than leave the next read to fail with "Array has been deleted"."""
    lost = [i for i in mask_ if type(leaves[i]) is ArrayImpl and leaves[i].is_deleted()]
    if lost and hasattr(e, "add_note"):
        e.add_note(f"hijaxc: {name} failed while executing, after donating the buffers of "
                   f"{len(lost)} Variable(s) it writes back (donate='auto'): they now hold deleted "
                   "arrays and their state is lost.  Use hijaxc.jit(..., donate=False) where a "
                   "failure at run time must leave the state intact.")
