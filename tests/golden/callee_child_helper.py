# converted (called from compiled code) by hijaxc from golden_corpus.py:128 (Child.__helper)
def __hx_factory(__hx):
    def _Child__helper(self, x):  # golden_corpus.py:128
        return __hx.cond(x[0] > 0, lambda: self.w[...], lambda: -self.w[...])  # golden_corpus.py:129
    return _Child__helper, None
