"""What tests/test_distributed.py runs in two processes and in one (shared settings)."""

import numpy as np

import jaxviz as jv

TOPK_LAYER = "relu2"   # after a ReLU: many exact zeros, so ties are exercised
K = 9
TOPK_BATCH = 5         # shares of 21 and 20 images: uneven, and a padded last batch
SWEEP_LAYER = "conv2"
SWEEP_CHANNELS = [0, 3, 5, 6, 9]
SWEEP = dict(steps=3, size=28, batch_size=2)   # 2 processes x 1 device: chunks of 2


def images():
    x, y = jv.data.digits("test")
    return x[:41], y[:41]


def _report(model, variables, x, y):
    """metrics.report's table as numbers: (methods, 5) means over every process's images."""
    import jax

    from jaxviz.analysis import metrics

    rows = metrics.report(model, variables, x, y, key=jax.random.key(3),
                          methods=["gradient", "smoothgrad", "occlusion", "grad_cam"],
                          options={"smoothgrad": {"samples": 4},
                                   "occlusion": {"window": 8, "stride": 8}}, step=56)
    return np.asarray([[r.deletion_auc, r.insertion_auc, r.spearman, r.spearman_abs, r.images]
                       for r in rows], np.float64)


# name -> f(model, variables, x_share, y_share): gathered results (same on every process)
METRICS: dict = {"report": _report}
