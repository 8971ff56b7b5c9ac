"""examples/nnx_toy_examples/05_vae.py: a VAE whose Encoder stores a new ``Loss`` Variable on
itself during the forward pass and draws noise from its own ``Rngs``; the step ``nnx.pop``s the
losses inside ``nnx.value_and_grad``.  MNIST replaced by random binary 6x6 images."""

import typing as tp

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from corpus import OPT_WRT
from corpus import optimizer as make_optimizer

SOURCE = "examples/nnx_toy_examples/05_vae.py"
SLOW = True  # compiles many ops eagerly and three times over: newest flax only (see test_corpus)

latent_size = 4
image_shape: tp.Sequence[int] = (6, 6)
batch_size: int = 8


class Loss(nnx.Variable):
    pass


class Encoder(nnx.Module):
    def __init__(self, din: int, dmid: int, dout: int, *, rngs: nnx.Rngs):
        self.linear1 = nnx.Linear(din, dmid, rngs=rngs)
        self.linear_mean = nnx.Linear(dmid, dout, rngs=rngs)
        self.linear_std = nnx.Linear(dmid, dout, rngs=rngs)
        self.rngs = rngs

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.reshape((x.shape[0], -1))  # flatten
        x = self.linear1(x)
        x = jax.nn.relu(x)

        mean = self.linear_mean(x)
        std = jnp.exp(self.linear_std(x))

        self.kl_loss = Loss(
            jnp.mean(0.5 * jnp.mean(-jnp.log(std**2) - 1.0 + std**2 + mean**2, axis=-1))
        )
        key = self.rngs.noise()
        z = mean + std * jax.random.normal(key, mean.shape)
        return z


class Decoder(nnx.Module):
    def __init__(self, din: int, dmid: int, dout: int, *, rngs: nnx.Rngs):
        self.linear1 = nnx.Linear(din, dmid, rngs=rngs)
        self.linear2 = nnx.Linear(dmid, dout, rngs=rngs)

    def __call__(self, z: jax.Array) -> jax.Array:
        z = self.linear1(z)
        z = jax.nn.relu(z)
        logits = self.linear2(z)
        return logits


class VAE(nnx.Module):
    def __init__(
        self,
        din: int,
        hidden_size: int,
        latent_size: int,
        output_shape: tp.Sequence[int],
        *,
        rngs: nnx.Rngs,
    ):
        self.output_shape = output_shape
        self.encoder = Encoder(din, hidden_size, latent_size, rngs=rngs)
        self.decoder = Decoder(latent_size, hidden_size, int(np.prod(output_shape)), rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        z = self.encoder(x)
        logits = self.decoder(z)
        logits = jnp.reshape(logits, (-1, *self.output_shape))
        return logits

    def generate(self, z):
        logits = self.decoder(z)
        logits = jnp.reshape(logits, (-1, *self.output_shape))
        return nnx.sigmoid(logits)


def run(jit, steps=3):
    rng = np.random.default_rng(42)
    X_train = (rng.random((32, *image_shape)) > 0.5).astype(np.float32)

    model = VAE(
        din=int(np.prod(image_shape)),
        hidden_size=16,
        latent_size=latent_size,
        output_shape=image_shape,
        rngs=nnx.Rngs(0, noise=1),
    )

    optimizer = make_optimizer(model, optax.adam(1e-3), wrt=nnx.Param)

    @jit
    def train_step(model: VAE, optimizer: nnx.Optimizer, x: jax.Array):
        def loss_fn(model: VAE):
            logits = model(x)
            losses = nnx.pop(model, Loss)
            kl_loss = sum(jax.tree_util.tree_leaves(losses), 0.0)
            reconstruction_loss = jnp.mean(optax.sigmoid_binary_cross_entropy(logits, x))
            loss = reconstruction_loss + 0.1 * kl_loss
            return loss

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        if OPT_WRT:
            optimizer.update(model, grads)
        else:  # flax 0.10.4
            optimizer.update(grads)

        return loss

    @jit
    def forward(model: VAE, x: jax.Array) -> jax.Array:
        y_pred = model(x)
        return jax.nn.sigmoid(y_pred)

    @jit
    def sample(model: VAE, z: jax.Array) -> jax.Array:
        return model.generate(z)

    losses = []
    for step in range(steps):
        x_batch = X_train[step * batch_size : (step + 1) * batch_size]
        losses.append(train_step(model, optimizer, x_batch))

    y_pred = forward(model, X_train[:5])
    samples = sample(model, rng.normal(scale=1.5, size=(3, latent_size)).astype(np.float32))
    return {
        "losses": losses,
        "y_pred": y_pred,
        "samples": samples,
        "model": model,
        "optimizer": optimizer,
    }
