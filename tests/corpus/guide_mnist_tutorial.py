"""docs_nnx/mnist_tutorial.md: a CNN with BatchNorm and Dropout, ``nnx.Optimizer(adamw)``,
``nnx.MultiMetric`` (Accuracy, Average), ``nnx.value_and_grad(has_aux=True)`` of a module-level
``loss_fn``, train/eval views (``nnx.view``; ``model.train()``/``model.eval()`` where flax lacks
it) and ``pred_step``.  MNIST replaced by random 8x8 images; the CNN's Linear sized to match."""

from functools import partial

import numpy as np
import optax
from flax import nnx

from corpus import OPT_WRT
from corpus import optimizer as make_optimizer

SOURCE = "docs_nnx/mnist_tutorial.md"
SLOW = True  # compiles many ops eagerly and three times over: newest flax only (see test_corpus)


class CNN(nnx.Module):
    """A simple CNN model."""

    def __init__(self, *, rngs: nnx.Rngs):
        self.conv1 = nnx.Conv(1, 4, kernel_size=(3, 3), rngs=rngs)
        self.batch_norm1 = nnx.BatchNorm(4, rngs=rngs)
        self.dropout1 = nnx.Dropout(rate=0.025)
        self.conv2 = nnx.Conv(4, 8, kernel_size=(3, 3), rngs=rngs)
        self.batch_norm2 = nnx.BatchNorm(8, rngs=rngs)
        self.avg_pool = partial(nnx.avg_pool, window_shape=(2, 2), strides=(2, 2))
        self.linear1 = nnx.Linear(32, 16, rngs=rngs)
        self.dropout2 = nnx.Dropout(rate=0.025)
        self.linear2 = nnx.Linear(16, 10, rngs=rngs)

    def __call__(self, x, rngs: nnx.Rngs | None = None):
        x = self.avg_pool(nnx.relu(self.batch_norm1(self.dropout1(self.conv1(x), rngs=rngs))))
        x = self.avg_pool(nnx.relu(self.batch_norm2(self.conv2(x))))
        x = x.reshape(x.shape[0], -1)  # flatten
        x = nnx.relu(self.dropout2(self.linear1(x), rngs=rngs))
        x = self.linear2(x)
        return x


def loss_fn(model: CNN, batch, rngs: nnx.Rngs | None = None):
    logits = model(batch["image"], rngs)
    loss = optax.softmax_cross_entropy_with_integer_labels(
        logits=logits, labels=batch["label"]
    ).mean()
    return loss, logits


def run(jit, steps=3):
    rng = np.random.default_rng(0)
    batches = [
        {
            "image": rng.normal(size=(8, 8, 8, 1)).astype(np.float32),
            "label": rng.integers(0, 10, size=(8,)).astype(np.int32),
        }
        for _ in range(steps)
    ]
    test_batch = {
        "image": rng.normal(size=(8, 8, 8, 1)).astype(np.float32),
        "label": rng.integers(0, 10, size=(8,)).astype(np.int32),
    }

    model = CNN(rngs=nnx.Rngs(0))
    learning_rate = 0.005
    momentum = 0.9
    # eps=1e-3 (optax default 1e-8): Adam's first steps turn float noise in near-zero gradients into
    # full +-lr steps, and eager and jitted convolutions round differently (checked: nnx.jit and
    # hijaxc.jit then agree with each other, not with eager)
    optimizer = make_optimizer(model, optax.adamw(learning_rate, momentum, eps=1e-3), wrt=nnx.Param)
    metrics = nnx.MultiMetric(
        accuracy=nnx.metrics.Accuracy(),
        loss=nnx.metrics.Average("loss"),
    )

    @jit
    def train_step(
        model: CNN, optimizer: nnx.Optimizer, metrics: nnx.MultiMetric, rngs: nnx.Rngs, batch
    ):
        """Train for a single step."""
        grad_fn = nnx.value_and_grad(loss_fn, has_aux=True)
        (loss, logits), grads = grad_fn(model, batch, rngs)
        metrics.update(loss=loss, logits=logits, labels=batch["label"])  # In-place updates.
        if OPT_WRT:
            optimizer.update(model, grads)  # In-place updates.
        else:  # flax 0.10.4
            optimizer.update(grads)

    @jit
    def eval_step(model: CNN, metrics: nnx.MultiMetric, batch):
        loss, logits = loss_fn(model, batch)
        metrics.update(loss=loss, logits=logits, labels=batch["label"])  # In-place updates.

    @jit
    def pred_step(model: CNN, batch):
        logits = model(batch["image"], None)
        return logits.argmax(axis=1)

    if hasattr(nnx, "view"):
        train_model = nnx.view(model, deterministic=False, use_running_average=False)
        eval_model = nnx.view(model, deterministic=True, use_running_average=True)
    else:  # flax < 0.12: one model switched between modes
        train_model = eval_model = model

    rngs = nnx.Rngs(0)
    history = []
    for _step, batch in enumerate(batches):
        if not hasattr(nnx, "view"):
            model.train()
        train_step(train_model, optimizer, metrics, rngs, batch)
        history.append(metrics.compute())
        metrics.reset()
        if not hasattr(nnx, "view"):
            model.eval()
        eval_step(eval_model, metrics, test_batch)
        history.append(metrics.compute())
        metrics.reset()
    pred = pred_step(eval_model, test_batch)
    return {
        "history": history,
        "pred": pred,
        "model": model,
        "optimizer": optimizer,
        "metrics": metrics,
        "rngs": rngs,
    }
