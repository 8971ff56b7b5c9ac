# converted (called from compiled code) by hijaxc from golden_corpus.py:173 (_make_closure_callee.<locals>.accumulate)
def __hx_factory(__hx, stats, total, __hx_cells):
    def accumulate(x):  # golden_corpus.py:173
        nonlocal total  # golden_corpus.py:174
        __hx_t0, __hx_i0 = (__hx.foreign_cell(stats, __hx_cells, 'stats'), ...)  # golden_corpus.py:175
        __hx.setitem(__hx_t0, __hx_i0, __hx_t0[__hx_i0] + jnp.sum(x), 'golden_corpus.py:175')  # golden_corpus.py:175
        return x + total  # golden_corpus.py:176
    return accumulate, None
