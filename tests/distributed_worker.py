"""One process of the two-process checks in tests/test_distributed.py.

Run as ``python tests/distributed_worker.py PROCESS_ID PORT OUT_DIR``: joins a two-process
``jax.distributed`` job on 127.0.0.1 (gloo collectives between CPU processes), feeds its
half of the images to each analysis, and writes what it got to OUT_DIR/process{ID}.npz.
The parent test computes the same in one process and compares.
"""

import sys

import jax

jax.config.update("jax_cpu_collectives_implementation", "gloo")
process, port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2,
                           process_id=process, initialization_timeout=120)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import jaxviz as jv  # noqa: E402
from jaxviz import parallel  # noqa: E402
from jaxviz.synthesis import param  # noqa: E402

sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
import distributed_cases as cases  # noqa: E402

assert jax.process_count() == 2 and jax.device_count() == 2 * jax.local_device_count()
results = {}
model, variables = jv.load("lenet_digits")
x, y = cases.images()
mine = parallel.share(len(x))

# top_k: an array share (indices counted, shifted by the shares before) and a stream
found = jv.analysis.top_k(model, variables, x[mine], cases.TOPK_LAYER, k=cases.K,
                          batch_size=cases.TOPK_BATCH)
results.update(topk_values=found.values, topk_ids=found.ids, topk_positions=found.positions,
               topk_count=found.count)
streamed = jv.analysis.top_k(model, variables, jv.stream.images(x, batch_size=cases.TOPK_BATCH),
                             cases.TOPK_LAYER, k=cases.K)
results.update(stream_values=streamed.values, stream_ids=streamed.ids,
               stream_positions=streamed.positions)

# sweep in float64: every process runs the same call, the channels sharded over all devices
with jax.enable_x64(True):
    variables64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), variables)
    results["sweep"] = np.asarray(jv.synthesis.sweep(
        model, variables64, cases.SWEEP_LAYER, cases.SWEEP_CHANNELS, key=jax.random.key(5),
        param=param.Fourier(dtype=jnp.float64), progress=False, **cases.SWEEP))

for name, compute in cases.METRICS.items():
    results[name] = np.asarray(compute(model, variables, x[mine], y[mine]))

np.savez(f"{out}/process{process}.npz", **results)
print(f"process {process}: done", flush=True)
