# converted (called from compiled code) by hijaxc from golden_corpus.py:115 (Counter.bump)
def __hx_factory(__hx):
    def bump(self, x):  # golden_corpus.py:115

        def body(i, c):  # golden_corpus.py:116
            __hx_t0, __hx_i0 = (self.w, ...)  # golden_corpus.py:117
            __hx.setitem(__hx_t0, __hx_i0, __hx_t0[__hx_i0] + x * self._Counter__scale, 'golden_corpus.py:117')  # golden_corpus.py:117
            return c + 1.0  # golden_corpus.py:118
        return __hx.fori_loop(0, 3, body, 0.0)  # golden_corpus.py:120
    return bump, None
