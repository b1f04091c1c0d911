"""Feature synthesis: images that maximize an objective, one batch per compiled program.

::

    import jaxviz as jv

    model, variables = jv.load("alexnet")
    images = jv.synthesis.sweep(model, variables, "conv5", channels="all",
                                key=jax.random.key(0), steps=512, size=128)   # (256, H, W, 3)
    result = jv.synthesis.visualize(model, variables, jv.objectives.class_logit(281),
                                    key=jax.random.key(1))

Modules: :mod:`~jaxviz.synthesis.param` (pixels, Fourier), :mod:`~jaxviz.synthesis.transforms`
(pad, jitter, scale, rotate), :mod:`~jaxviz.synthesis.regularizers` (L1, L2, colour,
total variation, edge energy, Scharr, blur), :mod:`~jaxviz.synthesis.optimize` (the loop,
octaves, sweeps, sharding).
"""

from jaxviz.synthesis import optimize as optimize
from jaxviz.synthesis import param as param
from jaxviz.synthesis import recipes as recipes
from jaxviz.synthesis import regularizers as regularizers
from jaxviz.synthesis import transforms as transforms
from jaxviz.synthesis.optimize import Synthesis as Synthesis
from jaxviz.synthesis.optimize import images_per_chunk as images_per_chunk
from jaxviz.synthesis.optimize import normalize_by_max_abs as normalize_by_max_abs
from jaxviz.synthesis.optimize import sweep as sweep
from jaxviz.synthesis.optimize import visualize as visualize

__all__ = ["Synthesis", "images_per_chunk", "normalize_by_max_abs", "optimize", "param", "recipes",
           "regularizers", "sweep", "transforms", "visualize"]
