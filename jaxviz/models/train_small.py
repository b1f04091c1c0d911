"""Trains the bundled digits model: ``python -m jaxviz.models.train_small --out FILE``.

LeNet (:class:`jaxviz.models.small.LeNet`) on scikit-learn's handwritten digits
(:func:`jaxviz.data.digits`, 28 px), with optax's Adam and a cosine learning-rate decay,
seeded, with label smoothing 0.1: the softmax of a confident prediction stays near 0.9
instead of rounding to 1.0 in float32, where the cross-entropy's input gradient would
vanish (gradient-ascent adversarial examples and saliency need it). Every batch pastes its digits at random positions on a blank canvas whose side
cycles through 28, 36 and 44 px, so the network (global average pooling before its
classifier) recognizes a digit anywhere on a larger blank image. Prints the held-out
accuracy at 28 px and on a 56 px canvas; the file is written atomically.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxviz import data
from jaxviz.models.small import LeNet
from jaxviz.models.weights import save_weights

CANVASES = (28, 36, 44)


def _batches(x: np.ndarray, y: np.ndarray, batch_size: int, rng: np.random.Generator,
             canvas: int):
    order = rng.permutation(len(x))
    side = x.shape[1]
    for start in range(0, len(order) - batch_size + 1, batch_size):
        idx = order[start:start + batch_size]
        pos = rng.integers(0, canvas - side + 1, size=(batch_size, 2))
        yield data.place_on_canvas(x[idx], canvas, pos), y[idx]


def accuracy(model: LeNet, variables: Any, x: np.ndarray, labels: np.ndarray,
             batch_size: int = 512) -> float:
    """Fraction of ``x`` classified as ``labels`` (batched, jitted)."""
    predict = jax.jit(lambda v, t: jnp.argmax(model.apply(v, t), axis=-1))
    hits = 0
    for s in range(0, len(x), batch_size):
        hits += int((np.asarray(predict(variables, x[s:s + batch_size])) == labels[s:s + batch_size]).sum())
    return hits / len(x)


def centred(x: np.ndarray, canvas: int) -> np.ndarray:
    """Digits pasted at the centre of a blank ``canvas``."""
    off = (canvas - x.shape[1]) // 2
    return data.place_on_canvas(x, canvas, np.full((len(x), 2), off))


def train_lenet_digits(*, seed: int = 0, epochs: int = 30, batch_size: int = 32,
                       lr: float = 3e-3, smoothing: float = 0.1,
                       log: Callable[[str], None] = print
                       ) -> tuple[LeNet, dict[str, Any], dict[str, float]]:
    """Trains LeNet on the training split (label smoothing ``smoothing``); returns
    ``(model, variables, accuracies)``."""
    x, y = data.digits("train")
    xt, yt = data.digits("test")
    model = LeNet()
    variables = jax.jit(model.init)(jax.random.key(seed), jnp.zeros((1, 28, 28, 1)))
    steps = epochs * (len(x) // batch_size)
    opt = optax.adam(optax.cosine_decay_schedule(lr, steps))
    state = opt.init(variables["params"])

    @jax.jit
    def step(params, state, xb, yb):
        def loss(p):
            logits = model.apply({"params": p}, xb)
            targets = optax.smooth_labels(jax.nn.one_hot(yb, model.num_classes), smoothing)
            return optax.softmax_cross_entropy(logits, targets).mean()

        value, grads = jax.value_and_grad(loss)(params)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state, value

    rng = np.random.default_rng(seed)
    params = variables["params"]
    for epoch in range(epochs):
        canvas = CANVASES[epoch % len(CANVASES)]
        losses = []
        for xb, yb in _batches(x, y, batch_size, rng, canvas):
            params, state, value = step(params, state, jnp.asarray(xb), jnp.asarray(yb))
            losses.append(float(value))
        if epoch % 5 == 4 or epoch == epochs - 1:
            log(f"epoch {epoch + 1}/{epochs}: loss {np.mean(losses):.4f}")
    variables = {"params": params}
    acc = {"test_28": accuracy(model, variables, xt, yt),
           "test_56_centred": accuracy(model, variables, centred(xt, 56), yt),
           "train_28": accuracy(model, variables, x, y)}
    log(f"held-out accuracy: {acc['test_28']:.4f} at 28 px, {acc['test_56_centred']:.4f} "
        f"centred on a 56 px canvas; training {acc['train_28']:.4f}")
    return model, variables, acc


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="the .safetensors file to write")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=30)
    args = p.parse_args(argv)
    model, variables, _ = train_lenet_digits(seed=args.seed, epochs=args.epochs)
    path = save_weights(variables, args.out, model=model)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
