"""Several processes, one answer: each process's share of a work list, and gathering.

Under ``jax.distributed.initialize(...)`` (several hosts, or several processes on one
machine) every process runs the same program on its own share of the images or
channels. These helpers are the only place that knows about processes; everything else
calls them and is then correct with one process or many::

    mine = parallel.share(len(images))            # this process's slice of the list
    local = f(images[mine])                         # (n_mine, ...) per-item results
    everything = parallel.gather(local)             # (n, ...) on every process, in order

With one process, :func:`share` is the whole list and :func:`gather` is ``np.asarray``.
See docs/architecture.md, "Many processes".
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

__all__ = ["gather", "gather_tree", "is_main", "share", "share_bounds", "to_host"]


def share_bounds(n: int, process: int | None = None, count: int | None = None) -> tuple[int, int]:
    """[start, stop) of process ``process``'s contiguous share of ``n`` items.

    Shares differ in size by at most one, the first ``n % count`` processes taking the
    larger; concatenated in process order they are ``range(n)``.
    """
    process = jax.process_index() if process is None else int(process)
    count = jax.process_count() if count is None else int(count)
    base, extra = divmod(int(n), count)
    start = process * base + min(process, extra)
    return start, start + base + (process < extra)


def share(n: int) -> slice:
    """This process's contiguous slice of ``n`` items (all of them with one process)."""
    return slice(*share_bounds(n))


def is_main() -> bool:
    """True on process 0 (the one that writes files and prints)."""
    return jax.process_index() == 0


def gather(local: Any) -> np.ndarray:
    """Concatenates each process's ``local`` (n_p, ...) array along axis 0, in process
    order, and returns the result on every process. Shares may differ in length (and may
    be empty); the trailing shape and dtype must agree. One process: ``np.asarray``."""
    local = np.asarray(local)
    if jax.process_count() == 1:
        return local
    from jax.experimental import multihost_utils

    lengths = multihost_utils.process_allgather(np.asarray([local.shape[0]], np.int64))
    lengths = np.asarray(lengths).reshape(-1)
    longest = int(lengths.max())
    padded = np.zeros((longest, *local.shape[1:]), local.dtype)
    padded[:local.shape[0]] = local
    every = np.asarray(multihost_utils.process_allgather(padded))  # (P, longest, ...)
    return np.concatenate([every[p, :int(m)] for p, m in enumerate(lengths)])


def to_host(a: Any) -> np.ndarray:
    """A jax array as a numpy array on every process: ``np.asarray`` when this process holds
    all of it, else gathered from the processes that hold its shards."""
    if not isinstance(a, jax.Array) or a.is_fully_addressable:
        return np.asarray(a)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(a, tiled=True))


def gather_tree(local: Any) -> Any:
    """:func:`gather` applied to every leaf of a pytree."""
    return jax.tree.map(gather, local)
