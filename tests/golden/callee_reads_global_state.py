# converted (called from compiled code) by hijaxc from golden_corpus.py:140 (reads_global_state)
def __hx_factory(__hx, __hx_cells):
    def reads_global_state(x):  # golden_corpus.py:140
        __hx_t0, __hx_i0 = (__hx.foreign(counter, globals(), 'counter'), ...)  # golden_corpus.py:141
        __hx.setitem(__hx_t0, __hx_i0, __hx_t0[__hx_i0] + 1, 'golden_corpus.py:141')  # golden_corpus.py:141
        return x * __hx.foreign(counter, globals(), 'counter')[...]  # golden_corpus.py:142
    return reads_global_state, None
