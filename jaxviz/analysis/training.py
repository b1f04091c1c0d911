"""Hidden units of a 2-D network moving during training, drawn as lines.

A one-hidden-layer MLP (:class:`jaxviz.models.small.MLP2d`) learns a two-class problem in
the plane. Hidden unit ``j`` computes ``relu(w_j . x + b_j)``: it switches on across the
line ``{x : w_j . x + b_j = 0}``. Drawing those lines over the data at chosen iterations
shows how training moves the units into place; :func:`write_frames` saves the frames as
one PNG grid and an animated GIF (``jaxviz mlp2d-lines --out DIR``).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from PIL import Image, ImageDraw

from jaxviz import render
from jaxviz.models.small import MLP2d
from jaxviz._host import to_device
from jaxviz.errors import InputError

CLASS_COLOURS = ((31, 119, 180), (214, 39, 40))
REGION_COLOURS = ((222, 235, 247), (252, 226, 224))
LINE_COLOUR = (20, 20, 20)


def two_moons(n: int = 200, noise: float = 0.1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaved half circles, ``n`` points in all: ``(x (n, 2) float32, y (n,) int32)``,
    centred near the origin."""
    rng = np.random.default_rng(seed)
    k = n // 2
    t = rng.uniform(0, np.pi, n)
    upper = np.stack([np.cos(t[:k]), np.sin(t[:k])], 1)
    lower = np.stack([1 - np.cos(t[k:]), 0.5 - np.sin(t[k:])], 1)
    x = np.concatenate([upper, lower]) - np.array([0.5, 0.25])
    x = x + noise * rng.standard_normal(x.shape)
    y = np.concatenate([np.zeros(k), np.ones(n - k)]).astype(np.int32)
    return x.astype(np.float32), y


def train_mlp2d(x: np.ndarray, y: np.ndarray, *, hidden: int = 8, steps: int = 2000,
                lr: float = 0.01, seed: int = 0, record: Sequence[int] = (0, 2000)
                ) -> tuple[MLP2d, list[tuple[int, Any]]]:
    """Full-batch Adam on the cross-entropy; returns the model and ``(iteration, variables)``
    at each iteration in ``record`` (0 is the initialization)."""
    model = MLP2d(hidden=hidden)
    variables = model.init(jax.random.key(seed), jnp.zeros((1, 2)))
    opt = optax.adam(lr)
    state = opt.init(variables)
    xj, yj = to_device(x), to_device(y)

    @jax.jit
    def step(v, s):
        def loss(p):
            return optax.softmax_cross_entropy_with_integer_labels(model.apply(p, xj), yj).mean()

        g = jax.grad(loss)(v)
        u, s = opt.update(g, s, v)
        return optax.apply_updates(v, u), s

    wanted = sorted(set(int(r) for r in record))
    if wanted and (wanted[0] < 0 or wanted[-1] > steps):
        raise InputError(f"expected record iterations within 0..{steps}, got {wanted}")
    snapshots = []
    for it in range(steps + 1):
        if it in wanted:
            snapshots.append((it, jax.tree.map(np.asarray, variables)))
        if it < steps:
            variables, state = step(variables, state)
    return model, snapshots


def _segment(w: np.ndarray, b: float, lo: float, hi: float):
    """The part of the line w . p + b = 0 inside the square [lo, hi]^2, or None."""
    points = []
    for axis in (0, 1):
        other = 1 - axis
        if abs(w[other]) < 1e-12:
            continue
        for v in (lo, hi):  # where the line crosses p[axis] = v
            u = -(b + w[axis] * v) / w[other]
            if lo - 1e-9 <= u <= hi + 1e-9:
                p = [0.0, 0.0]
                p[axis], p[other] = v, u
                points.append(tuple(p))
    points = list(dict.fromkeys(points))
    return (points[0], points[1]) if len(points) >= 2 else None


def draw_frame(model: MLP2d, variables: Any, x: np.ndarray, y: np.ndarray, *,
               size: int = 240, extent: float = 2.0, title: str | None = None) -> np.ndarray:
    """One frame (size, size, 3) uint8: the plane ``[-extent, extent]^2`` tinted by the
    predicted class, the data points coloured by label, and each hidden unit's line."""
    grid = (np.arange(size) + 0.5) / size * 2 * extent - extent
    gx, gy = np.meshgrid(grid, grid[::-1])  # row 0 is the top: y = +extent
    pred = np.asarray(jnp.argmax(model.apply(variables, jnp.asarray(
        np.stack([gx.ravel(), gy.ravel()], 1), jnp.float32)), -1)).reshape(size, size)
    img = np.asarray(REGION_COLOURS, np.uint8)[pred]
    canvas = Image.fromarray(img)
    draw = ImageDraw.Draw(canvas)

    def to_pixel(p):
        return ((p[0] + extent) / (2 * extent) * size, (extent - p[1]) / (2 * extent) * size)

    kernel = np.asarray(variables["params"]["hidden"]["kernel"])   # (2, hidden)
    bias = np.asarray(variables["params"]["hidden"]["bias"])
    for j in range(kernel.shape[1]):
        seg = _segment(kernel[:, j], float(bias[j]), -extent, extent)
        if seg is not None:
            draw.line([to_pixel(seg[0]), to_pixel(seg[1])], fill=LINE_COLOUR, width=1)
    for p, label in zip(x, y):
        cx, cy = to_pixel(p)
        draw.ellipse([cx - 2, cy - 2, cx + 2, cy + 2], fill=CLASS_COLOURS[int(label)])
    if title:
        draw.text((4, 2), title, fill=LINE_COLOUR)
    return np.asarray(canvas)


def _atomic(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_frames(out: str | os.PathLike, *, hidden: int = 8, steps: int = 2000,
                 record: Sequence[int] = (0, 25, 50, 100, 200, 400, 800, 2000),
                 seed: int = 0, size: int = 240, duration_ms: int = 600) -> dict[str, Path]:
    """Trains the 2-D MLP on :func:`two_moons` and writes ``frames.png`` (a grid of the
    frames, captioned with their iteration) and ``training.gif`` into the folder ``out``
    (created if needed; each file written atomically). Returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    x, y = two_moons(seed=seed)
    model, snaps = train_mlp2d(x, y, hidden=hidden, steps=steps, seed=seed, record=record)
    frames = [draw_frame(model, v, x, y, size=size, title=f"iteration {it}") for it, v in snaps]
    grid = render.grid(np.stack(frames), ncols=min(4, len(frames)),
                       labels=[f"iteration {it}" for it, _ in snaps])
    paths = {"grid": out / "frames.png", "gif": out / "training.gif"}
    _atomic(paths["grid"], lambda p: Image.fromarray(grid).save(p, format="PNG"))
    pil = [Image.fromarray(f) for f in frames]
    _atomic(paths["gif"], lambda p: pil[0].save(p, format="GIF", save_all=True,
                                                append_images=pil[1:], duration=duration_ms,
                                                loop=0))
    return paths


__all__ = ["draw_frame", "train_mlp2d", "two_moons", "write_frames"]
