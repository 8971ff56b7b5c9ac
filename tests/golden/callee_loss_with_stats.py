# converted (called from compiled code) by hijaxc from golden_corpus.py:132 (loss_with_stats)
def __hx_factory(__hx):
    def loss_with_stats(model, x):  # golden_corpus.py:132

        def loss(head):  # golden_corpus.py:133
            y = __hx.callee(model.body)(x)  # golden_corpus.py:134
            return jnp.sum((y * head) ** 2)  # golden_corpus.py:135
        return __hx.value_and_grad(loss)(model.head[...])  # golden_corpus.py:137
    return loss_with_stats, None
