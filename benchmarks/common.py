"""Shared by the benchmark scripts: the seeded AlexNet both frameworks run, timing, paired
speedups (baseline time / jaxviz time: above 1, jaxviz is faster) and the machine-readable
acceptance rows that ``python -m benchmarks`` summarizes."""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from typing import NamedTuple


def add_xla_option(parser) -> None:
    """``--xla-default``: keep XLA's default convolutions (YNNPACK on the CPU in jaxlib 0.10,
    XLA's own layout choice on a GPU)."""
    parser.add_argument("--xla-default", action="store_true",
                        help="do not call jaxviz.cpu.use_fast_convolutions() or "
                             "jaxviz.gpu.use_nchw_convolutions() (keep XLA's default "
                             "convolutions: YNNPACK on the CPU, XLA's layouts on a GPU)")


def apply_xla_option(args, gpu_nchw: bool = True) -> str:
    """Applies ``--xla-default`` before JAX starts; returns a phrase for the report.

    Unless ``--xla-default``: XLA:CPU's own convolutions (jaxviz.cpu) and, when
    ``gpu_nchw`` (float32 work), NCHW convolutions on a GPU (jaxviz.gpu; each flag concerns
    its backend only). The phrase names the CPU backend's choice, and why; on a GPU run it
    names what the (idle) CPU backend would use, not how the GPU ran: ``torch_device``'s
    phrase gives the GPU's layout."""
    import jaxlib

    import jaxviz.cpu
    import jaxviz.gpu

    if not args.xla_default and gpu_nchw:
        jaxviz.gpu.use_nchw_convolutions()
    if not args.xla_default and jaxviz.cpu.use_fast_convolutions():
        return "CPU backend: XLA's own convolutions (jaxviz.cpu.use_fast_convolutions())"
    if args.xla_default:
        why = "--xla-default"
    elif jaxviz.cpu._jaxlib_version() not in jaxviz.cpu.KNOWN_JAXLIB:
        why = f"the switch is not known for jaxlib {jaxlib.__version__}"
    else:
        why = "XLA_FLAGS already sets the YNN fusion list"
    return f"CPU backend: jaxlib's default convolutions (YNNPACK in jaxlib 0.10; {why})"


def add_tf32_option(parser) -> None:
    """``--allow-tf32``: on a GPU, leave both frameworks at TF32 (default: strict float32)."""
    parser.add_argument("--allow-tf32", action="store_true",
                        help="GPU only: leave TF32 on in both frameworks (default: strict fp32)")


def torch_device(allow_tf32: bool = False):
    """Where the torch side runs, set up like jax's side: ``(device, phrase for the report)``.

    ``cuda`` when jax's default backend is a GPU and torch sees CUDA, else the CPU (both
    frameworks on the same kind of device, never one on each). On a GPU, float32 is strict in
    both unless ``allow_tf32``: torch's TF32 switches are turned off and jax's default matmul
    and convolution precision is set to float32 (XLA:GPU may otherwise run them as TF32);
    cuDNN picks its fastest algorithms (``cudnn.benchmark``). Call it once, before any jitted
    work."""
    import jax
    import torch

    if not (jax.default_backend() == "gpu" and torch.cuda.is_available()):
        note = ""
        if jax.default_backend() != "cpu" or torch.cuda.is_available():
            note = (f" (jax backend {jax.default_backend()}, torch cuda "
                    f"{torch.cuda.is_available()}: not both on a GPU, so torch runs on the CPU)")
        return torch.device("cpu"), "CPU" + note
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = allow_tf32
    torch.backends.cudnn.allow_tf32 = allow_tf32
    if not allow_tf32:
        jax.config.update("jax_default_matmul_precision", "float32")
    import jaxviz.gpu

    layout = ("jax convolutions in NCHW (jaxviz.gpu.use_nchw_convolutions())"
              if jaxviz.gpu.nchw_convolutions_enabled() else "jax convolutions in XLA's layouts")
    return torch.device("cuda"), (
        f"GPU: {torch.cuda.get_device_name(0)} (jax {jax.devices()[0].device_kind}); "
        f"TF32 {'allowed in both' if allow_tf32 else 'off (strict fp32) in both'}; {layout}")


def torch_waiter(device):
    """A function that waits for the torch work queued on ``device``: ``cuda.synchronize``
    on a GPU, nothing on the CPU (whose calls return when done). Time a torch call on a
    GPU only with it: otherwise the clock stops at the kernel launch."""
    import torch

    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


def seeded_alexnet(device="cpu"):
    """torchvision's AlexNet with ``torch.manual_seed(0)`` weights, frozen and in eval mode
    (on ``device``), and its port: ``(torch_module, model, variables)``."""
    import torch
    import torchvision

    from weights_port import from_torchvision

    torch.manual_seed(0)
    tmodel = torchvision.models.alexnet(weights=None).eval()
    for prm in tmodel.parameters():
        prm.requires_grad_(False)
    model, variables = from_torchvision(tmodel)
    return tmodel.to(device), model, variables


def timed(fn, repeats: int) -> tuple[float, float, object]:
    """One warm-up call, then ``repeats`` timed calls: (median s, minimum s, last output)."""
    return timed_alternating([fn], repeats)[0]


def time_alternating(fns, repeats: int, warmup: int = 1) -> tuple[list[list[float]], list]:
    """``warmup`` untimed calls of each function, then ``repeats`` rounds that call each once
    in turn: (per function, its call times in s; per function, its last output).

    Alternating (jax, torch, jax, torch, ...) spreads load from other processes over every
    contender instead of landing on whichever ran while the machine was busy.
    """
    outs = [None] * len(fns)
    for k, fn in enumerate(fns):
        for _ in range(warmup):
            outs[k] = fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for k, fn in enumerate(fns):
            t = time.perf_counter()
            outs[k] = fn()
            times[k].append(time.perf_counter() - t)
    return times, outs


def timed_alternating(fns, repeats: int) -> list[tuple[float, float, object]]:
    """:func:`time_alternating` with one warm-up: per function (median s, minimum s, last output)."""
    times, outs = time_alternating(fns, repeats)
    return [(statistics.median(ts), min(ts), out) for ts, out in zip(times, outs)]


# --- paired timings and the rows `python -m benchmarks` summarizes ------------------------------

#: prefix of the machine-readable lines a script prints on stdout (one JSON object each);
#: ``python -m benchmarks`` collects them into its acceptance table and drops them from the
#: Markdown reports.
ROW_MARKER = "@@bench-row "


def add_pairs_option(parser, default: int) -> None:
    """``--pairs N`` (alias ``--repeats``): N timed rounds, each calling every contender once
    in turn, so every round pairs jaxviz's call with each PyTorch contender's call."""
    parser.add_argument("--pairs", "--repeats", dest="pairs", type=int, default=default,
                        help="timed rounds after the warm-up, each calling every contender once "
                             "in turn (jax, torch, jax, ...); speedups are the median over rounds "
                             f"of each round's ratio (default {default})")


def speedup(baseline_times, jax_times) -> float:
    """Median over paired rounds of baseline time / jaxviz time (above 1: jaxviz faster)."""
    return statistics.median(b / j for b, j in zip(baseline_times, jax_times, strict=True))


def best_contender(times: dict[str, list[float]]) -> str:
    """The name of the fastest contender (lowest median time)."""
    return min(times, key=lambda name: statistics.median(times[name]))


def emit_row(target: str, workload: str, contender: str, value: float, pairs: int) -> None:
    """Prints one acceptance row for ``python -m benchmarks``: jaxviz's median speedup over
    ``pairs`` paired rounds against ``contender`` (the best PyTorch one in this run) on
    ``workload``; ``target`` names the goal it is checked against (benchmarks/__main__.py)."""
    print(ROW_MARKER + json.dumps({"target": target, "workload": workload, "contender": contender,
                                   "speedup": float(value), "pairs": int(pairs)}), flush=True)


def write_atomic(path, text: str) -> None:
    """Writes ``text`` to ``path`` through a temporary file in the same folder and a rename,
    so a reader never sees half a report."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def publish(text: str, out: str | None) -> None:
    """Prints a script's Markdown report and, with ``--out``, writes it there
    (:func:`write_atomic`, ending in one newline)."""
    print(text)
    if out:
        write_atomic(out, text.rstrip("\n") + "\n")


# --- FLOP rates against the machine's measured peak ---------------------------------------------


class Peak(NamedTuple):
    """A measured float32 matmul rate (:func:`measured_peak_gflops`)."""

    jax: float    # GFLOP/s, jitted jax on its default device
    torch: float  # GFLOP/s, torch on the CPU or CUDA
    n: int        # the matmul's size: (n x n) @ (n x n)

    @property
    def best(self) -> float:
        return max(self.jax, self.torch)

    def phrase(self) -> str:
        """The rate in words, for a report's header."""
        return (f"{self.best:.0f} GFLOP/s, the faster of a jax ({self.jax:.0f}) and a torch "
                f"({self.torch:.0f}) {self.n} x {self.n} matmul")


def measured_peak_gflops(n: int | None = None, repeats: int = 5) -> Peak:
    """This machine's float32 matmul rate: the best of ``repeats`` (n x n) @ (n x n)
    products in jax (jitted, on its default device) and in torch (on the CPU, or on CUDA when
    jax runs on a GPU and torch sees one), after a warm-up, in GFLOP/s, with the size used.
    ``n`` is 2048 on a CPU and 8192 on a GPU (a smaller product does not fill one). The
    rate is at the precision set when it runs: call :func:`torch_device` first on a GPU."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch

    on_gpu = jax.default_backend() == "gpu" and torch.cuda.is_available()
    n = n or (8192 if on_gpu else 2048)
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    flop = 2.0 * n ** 3
    aj = jnp.asarray(a)
    mm = jax.jit(lambda x: x @ x)
    at = torch.from_numpy(a).to("cuda" if on_gpu else "cpu")
    sync = torch_waiter(at.device)
    times, _ = time_alternating([lambda: mm(aj).block_until_ready(),
                                 lambda: (at @ at, sync())], repeats)
    return Peak(flop / min(times[0]) / 1e9, flop / min(times[1]) / 1e9, n)


def xla_flops(fn, *args) -> float | None:
    """The FLOP count of ``jax.jit(fn)`` at ``args`` (arrays or ShapeDtypeStructs), from
    XLA:CPU's cost analysis whatever the default device: XLA:GPU's does not count the
    convolutions it hands to cuDNN (seen on an H100: 370 GFLOP for a channel sweep that
    does 83.5 TFLOP). None where the CPU backend is unavailable or gives no count."""
    import jax

    try:
        cpu = jax.sharding.SingleDeviceSharding(jax.devices("cpu")[0])
        specs = jax.tree_util.tree_map(
            lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=cpu), args)
        cost = jax.jit(fn).lower(*specs).compile().cost_analysis()
    except Exception:  # no CPU backend (JAX_PLATFORMS without cpu), or no cost analysis
        return None
    cost = cost[0] if isinstance(cost, list) else cost
    flops = (cost or {}).get("flops")
    return float(flops) if flops and flops > 0 else None


PROFILE_CALLS = 10


def kernel_profile(call, sync) -> list[tuple[str, int, float]]:
    """The CUDA kernels ``PROFILE_CALLS`` calls of ``call`` launch, from torch's profiler:
    ``[(name, launches, device microseconds)]``, longest first. CUPTI records every kernel
    of the process, so this names XLA's kernels as well as torch's."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    call()
    sync()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(PROFILE_CALLS):
            call()
        sync()
    found: dict[str, list] = {}
    for ev in prof.events():
        if ev.device_type == torch.autograd.DeviceType.CUDA:
            entry = found.setdefault(ev.name, [0, 0.0])
            entry[0] += 1
            entry[1] += ev.time_range.elapsed_us()
    return sorted(((k, c, us) for k, (c, us) in found.items()), key=lambda r: -r[2])


LAYOUT_KERNELS = ("ToNhwc", "ToNchw", "transpose", "convertTensor")


def kernel_summary(kernels, top: int = 4) -> str:
    """One line for ``kernel_profile``'s list: device time and launches a call, the share of
    layout conversions (NCHW <-> NHWC, transposes) and the longest kernels."""
    total = sum(us for _, _, us in kernels)
    if not total:
        return "no kernel recorded"
    layout = sum(us for name, _, us in kernels if any(k in name for k in LAYOUT_KERNELS))
    launches = sum(c for _, c, _ in kernels)
    longest = "; ".join(f"`{name.split('(')[0][:70]}` {us / total:.0%}"
                        for name, _, us in kernels[:top])
    return (f"{total / PROFILE_CALLS:.0f} us of kernels in {launches / PROFILE_CALLS:g} launches "
            f"a call, {layout / total:.1%} of it layout conversion; longest: {longest}")
