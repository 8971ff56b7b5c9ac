"""docs_nnx/examples/minigpt.md: a small decoder-only transformer (token + position ``nnx.Embed``,
``nnx.MultiHeadAttention`` with ``is_causal``, Dropout, LayerNorm, an ``nnx.Sequential`` MLP, the
blocks in an ``nnx.Sequential``), trained by the guide's ``train_step`` (``nnx.value_and_grad``
with ``has_aux``, ``nnx.MultiMetric``, Adam) and sampled with ``generate_step``.  Shrunk to
vocab 32, 2 blocks, embed 16, sequence 8, on one device: the guide's 2-device mesh annotations
(``kernel_metadata={'out_sharding': ...}``, ``reshard``) are left out; the sharded programs are
toy_04, toy_10 and guide_flax_gspmd.  ``@nnx.jit(donate_argnums=...)`` becomes ``@jit``."""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from corpus import OPT_WRT
from corpus import optimizer as make_optimizer

SOURCE = "docs_nnx/examples/minigpt.md"
SLOW = True  # compiles many ops eagerly and three times over: newest flax only (see test_corpus)

vocab_size = 32
num_transformer_blocks = 2
maxlen = 8
embed_dim = 16
num_heads = 2
feed_forward_dim = 16
batch_size = 4
top_k = 4


def skip_reason():
    if "is_causal" not in inspect.signature(nnx.MultiHeadAttention.__call__).parameters:
        return "nnx.MultiHeadAttention has no is_causal in this flax"
    return None


class TransformerBlock(nnx.Module):
    def __init__(
        self, embed_dim: int, num_heads: int, ff_dim: int, *, rngs: nnx.Rngs, rate: float = 0.1
    ):
        self.mha = nnx.MultiHeadAttention(num_heads=num_heads, in_features=embed_dim, rngs=rngs)
        self.dropout1 = nnx.Dropout(rate=rate, rngs=rngs)
        self.layer_norm1 = nnx.LayerNorm(epsilon=1e-6, num_features=embed_dim, rngs=rngs)
        self.mlp = nnx.Sequential(
            nnx.Linear(in_features=embed_dim, out_features=ff_dim, rngs=rngs),
            nnx.relu,
            nnx.Linear(in_features=ff_dim, out_features=embed_dim, rngs=rngs),
            nnx.Dropout(rate=rate, rngs=rngs),
        )
        self.layer_norm2 = nnx.LayerNorm(epsilon=1e-6, num_features=embed_dim, rngs=rngs)

    def __call__(self, inputs):
        attention_output = self.mha(inputs_q=inputs, is_causal=True, decode=False)
        attention_output = self.dropout1(attention_output)
        out1 = self.layer_norm1(inputs + attention_output)
        ffn_output = self.mlp(out1)
        return self.layer_norm2(out1 + ffn_output)


class TokenAndPositionEmbedding(nnx.Module):
    def __init__(self, maxlen: int, vocab_size: int, embed_dim: int, *, rngs: nnx.Rngs):
        self.token_emb = nnx.Embed(num_embeddings=vocab_size, features=embed_dim, rngs=rngs)
        self.pos_emb = nnx.Embed(num_embeddings=maxlen, features=embed_dim, rngs=rngs)

    def __call__(self, x):
        positions = jnp.arange(0, x.shape[1])[None, :]
        position_embedding = self.pos_emb(positions)
        token_embedding = self.token_emb(x)
        return token_embedding + position_embedding


class MiniGPT(nnx.Module):
    def __init__(
        self,
        maxlen: int,
        vocab_size: int,
        embed_dim: int,
        num_heads: int,
        feed_forward_dim: int,
        num_transformer_blocks: int,
        rngs: nnx.Rngs,
    ):
        self.embedding_layer = TokenAndPositionEmbedding(maxlen, vocab_size, embed_dim, rngs=rngs)
        self.transformer_blocks = nnx.Sequential(
            *[
                TransformerBlock(embed_dim, num_heads, feed_forward_dim, rngs=rngs)
                for _ in range(num_transformer_blocks)
            ]
        )
        self.output_layer = nnx.Linear(in_features=embed_dim, out_features=vocab_size, rngs=rngs)

    def __call__(self, inputs):
        x = self.embedding_layer(inputs)
        x = self.transformer_blocks(x)
        return self.output_layer(x)

    def sample_from(self, logits):
        logits, indices = jax.lax.top_k(logits, k=top_k)
        logits = nnx.softmax(logits)
        return jax.random.choice(jax.random.PRNGKey(0), indices, p=logits)

    def generate_step(self, padded_tokens, sample_index):  # @nnx.jit(donate_argnums=(1,))
        logits = self(padded_tokens)
        next_token = self.sample_from(logits[0][sample_index])
        return next_token


def create_model(rngs):
    return MiniGPT(
        maxlen,
        vocab_size,
        embed_dim,
        num_heads,
        feed_forward_dim,
        num_transformer_blocks=num_transformer_blocks,
        rngs=rngs,
    )


def loss_fn(model, batch):
    logits = model(batch[0])
    loss = optax.softmax_cross_entropy_with_integer_labels(logits=logits, labels=batch[1]).mean()
    return loss, logits


def run(jit, steps=2):
    @jit
    def train_step(model: MiniGPT, optimizer: nnx.Optimizer, metrics: nnx.MultiMetric, batch):
        grad_fn = nnx.value_and_grad(loss_fn, has_aux=True)
        (loss, logits), grads = grad_fn(model, batch)
        metrics.update(loss=loss, logits=logits, lables=batch[1])
        if OPT_WRT:
            optimizer.update(model, grads)
        else:  # flax 0.10.4
            optimizer.update(grads)

    model = create_model(rngs=nnx.Rngs(0))
    # eps=1e-3 (optax default 1e-8): Adam turns float noise in near-zero gradients into full steps
    optimizer = make_optimizer(model, optax.adam(1e-3, eps=1e-3), wrt=nnx.Param)
    metrics = nnx.MultiMetric(
        loss=nnx.metrics.Average("loss"),
    )
    prep_target_batch = jax.vmap(lambda tokens: jnp.concatenate((tokens[1:], jnp.array([0]))))
    tokens = np.random.default_rng(0).integers(1, vocab_size, size=(steps, batch_size, maxlen))
    history = []
    for step in range(steps):
        input_batch = jnp.array(tokens[step]).T.T
        target_batch = prep_target_batch(input_batch)
        train_step(model, optimizer, metrics, (input_batch, target_batch))
        history.append(metrics.compute())
        metrics.reset()

    generate_step = jit(MiniGPT.generate_step)
    start_tokens = [1, 2, 3]
    generated = []
    for _i in range(3):
        sample_index = len(start_tokens) + len(generated) - 1
        padded_tokens = jnp.array(
            start_tokens + generated + [0] * (maxlen - len(start_tokens) - len(generated))
        )[None, :]
        generated.append(int(generate_step(model, padded_tokens, sample_index)))
    return {
        "history": history,
        "generated": generated,
        "model": model,
        "optimizer": optimizer,
        "metrics": metrics,
    }
