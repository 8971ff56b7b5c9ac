"""examples/nnx_toy_examples/02_lifted_transforms.py, its training loop as written: the steps are
called through ``nnx.cached_partial(train_step, model, optimizer)``."""

import functools

import numpy as np
from flax import nnx

from corpus import missing
from corpus.toy_02_lifted_transforms import build, data, steps

SOURCE = "examples/nnx_toy_examples/02_lifted_transforms.py"


def skip_reason():
    return missing("cached_partial")


def run(jit, n=3):
    X, Y = data()
    model, optimizer = build()
    train_step, test_step = steps(jit)
    # nnx.cached_partial needs a jitted function: the eager reference run uses functools.partial
    cached_partial = nnx.cached_partial if jit.__name__ != "eager" else functools.partial
    cached_train_step = cached_partial(train_step, model, optimizer)
    cached_test_step = cached_partial(test_step, model)
    logs = []
    for step in range(n):
        idx = np.arange(step, step + 8)
        cached_train_step((X[idx], Y[idx]))
        logs.append(cached_test_step((X, Y)))
    return {"logs": logs, "model": model, "optimizer": optimizer, "y_pred": model(X)}
