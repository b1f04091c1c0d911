"""Three classic activation-maximization recipes, as settings of :func:`visualize`.

Each returns a :class:`~jaxviz.synthesis.optimize.Synthesis` whose images are ready to
show in [0, 1], made the way its recipe displays them.

- :func:`feature_map_mse`: optimize model-space noise so one channel of a layer
  approaches an unreachably high target (``objectives.unreachable_target``) with Adam;
  shown de-normalized and clipped (the VGG16 ``conv*_1`` exploration).
- :func:`class_model`: optimize a nearly blank model-space image for a class logit minus
  the multi-scale edge energy with Adam lr 0.1 (Simonyan et al. 2013's class model
  visualization with an edge prior); shown as ``0.5 + 0.1 (x - mean) / std``.
- :func:`octave_channel`: maximize a channel's mean with a normalized gradient step
  (``g / max|g|``), colour and Scharr-edge penalties, over octaves that enlarge the
  image and continue (Mordvintsev et al. 2015), starting from noise or from a picture.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxviz import data
from jaxviz import objectives as obj
from jaxviz.synthesis import param as param_lib
from jaxviz.synthesis import regularizers as reg
from jaxviz.synthesis.optimize import Synthesis, normalize_by_max_abs, visualize


def feature_map_mse(model, variables, layer: str, channels: Any, *, key: jax.Array,
                    size: int = 100, steps: int = 200, lr: float = 0.01,
                    low: float = -1.0, high: float = 1.0, init: Any = None,
                    dtype: Any = jnp.float32) -> Synthesis:
    """Channel maximization by MSE to an unreachable target, from uniform model-space noise.

    Args:
      layer: a convolution layer (e.g. VGG16's ``features.10``, conv3_1).
      channels: an int array (N,) of channels, one image each (or an int).
      key: PRNG key for the noise.
      size, steps, lr: image side, Adam steps and learning rate.
      low, high: range of the uniform noise, in the model's normalized units.
      init: (N, H, W, 3) model-space start instead of noise.
      dtype: parameter dtype.
    """
    channels = jnp.atleast_1d(jnp.asarray(channels, jnp.int32))
    result = visualize(model, variables, obj.unreachable_target(layer, channels), key=key,
                       batch=channels.shape[0], size=size, steps=steps,
                       param=param_lib.Pixels(low, high, dtype=dtype), transforms=None,
                       optimizer=optax.adam(lr), preprocess=None, init=init)
    return Synthesis(jnp.clip(data.denormalize(result.images), 0.0, 1.0), result.objective)


def class_model(model, variables, classes: Any, *, key: jax.Array, size: int = 224,
                steps: int = 250, lr: float = 0.1, std: float = 0.01,
                edge_weight: float = 1.0, init: Any = None,
                dtype: Any = jnp.float32) -> Synthesis:
    """Class logit minus the multi-scale edge energy, Adam, from N(0, std^2) model-space noise.

    Args:
      classes: an int array (N,) of classes (or an int).
      key: PRNG key; size, steps, lr, std: image side, Adam steps, learning rate and
        initial noise level; edge_weight: weight of ``regularizers.edge_energy``;
      init: (N, H, W, 3) model-space start instead of noise.
    """
    classes = jnp.atleast_1d(jnp.asarray(classes, jnp.int32))
    result = visualize(model, variables, obj.class_logit(classes), key=key,
                       batch=classes.shape[0], size=size, steps=steps,
                       param=param_lib.Pixels(std=std, dtype=dtype), transforms=None,
                       regularizers=[(edge_weight, reg.edge_energy)],
                       optimizer=optax.adam(lr), preprocess=None, init=init)
    x = result.images
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    sd = x.std(axis=(1, 2, 3), keepdims=True, ddof=1)
    return Synthesis(jnp.clip(0.5 + 0.1 * (x - mean) / sd, 0.0, 1.0), result.objective)


def octave_channel(model, variables, layer: str, channels: Any, *, key: jax.Array,
                   size: int = 128, octaves: int = 3, outscale: float = 4.0,
                   steps: int = 100, lr: float = 0.02, color_weight: float = 0.05,
                   edge_weight: float = 1e-3, sharpness: float = 1.0, init: Any = None,
                   dtype: Any = jnp.float32) -> Synthesis:
    """Channel mean with a normalized gradient step, colour and Scharr penalties, octaves.

    Each step moves every image by ``lr * g / max|g|`` (``g`` the gradient of
    ``-mean(channel) + color_weight * color_magnitude + edge_weight / sharpness *
    scharr``); after ``steps`` steps the image is enlarged (bilinear) and optimization
    continues, ``octaves`` times, the last octave ``outscale`` times the first's size.

    Args:
      layer, channels: the layer and one channel per image (int array (N,) or int).
      key: PRNG key for the starting noise (uniform in [0.4, 0.6), image units).
      size: first octave's side; octaves, outscale: number of octaves and the last
        one's scale (sizes ``size * outscale ** (k / (octaves - 1))``).
      steps: steps per octave; lr: step size in [0, 1] image units.
      color_weight, edge_weight, sharpness: penalty weights (the edge penalty is divided
        by ``sharpness``: larger is sharper).
      init: (H, W, 3) or (N, H, W, 3) picture in [0, 1] to start from.
    """
    channels = jnp.atleast_1d(jnp.asarray(channels, jnp.int32))
    scale = outscale ** (1.0 / (octaves - 1)) if octaves > 1 else 1.0
    result = visualize(model, variables, obj.channel(layer, channels), key=key,
                       batch=channels.shape[0], size=size, steps=steps,
                       param=param_lib.Pixels(0.4, 0.6, dtype=dtype), transforms=None,
                       regularizers=[(color_weight, reg.color_magnitude),
                                     (edge_weight / sharpness, reg.scharr)],
                       optimizer=optax.chain(normalize_by_max_abs(), optax.sgd(lr)),
                       init=init, octaves=octaves, octave_scale=scale)
    return Synthesis(jnp.clip(result.images, 0.0, 1.0), result.objective)


__all__ = ["class_model", "feature_map_mse", "octave_channel"]
