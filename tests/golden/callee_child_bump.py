# converted (called from compiled code) by hijaxc from golden_corpus.py:124 (Child.bump)
def __hx_factory(__hx, __class__):
    def bump(self, x):  # golden_corpus.py:124
        __hx.callee(super(__class__, self).bump)(x)  # golden_corpus.py:125
        return __hx.callee(self._Child__helper)(x)  # golden_corpus.py:126
    return bump, None
