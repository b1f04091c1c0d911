"""Forward and input-gradient timings: jaxviz (JAX/Flax) against torchvision (PyTorch).

What it measures, for each model (AlexNet, VGG16, GoogLeNet by default) on one batch of
random images (default batch 8, 224 x 224, float32):

  forward   logits = model(x)
  grad      forward + gradient with respect to the INPUT of
            sum_i logits[i, target_i]  (targets = arange(batch) % 1000),
            i.e. ``jax.grad(lambda x: logits(x)[arange, t].sum())``; no weight gradients.

Both frameworks run the same weights: a seeded random torchvision module
(``torch.manual_seed(0)``) is ported with ``weights_port.from_torchvision``, and the
jax and torch logits and input gradients are compared in the same run (max relative
error = max |jax - torch| / max |torch|; for the forward the logits are compared with the
last layer's bias set to zero on both sides, see ``zero_final_bias``), so the timings
compare equal work.

JAX: ``jax.jit`` with ``variables`` passed as an argument (closing over them would bake
the weights in as constants), ``block_until_ready`` after each call. PyTorch: ``eval()``,
parameters with ``requires_grad=False``, ``torch.no_grad()`` for the forward,
``requires_grad_`` on the input + ``backward`` for the gradient, default thread count.
Times are wall clock (``time.perf_counter``). For each task three rows:

  <task>               steady state: after the first calls and ``--warmup`` more, ``--pairs``
                       rounds of one torch call then one jax call; median (minimum) seconds,
                       and jaxviz's speedup = the median over rounds of torch / jax time
                       (above 1: jaxviz faster);
  <task>, first call   each framework's first call (jax: tracing + compiling + running);
  <task>, compile      first call minus the steady-state median: jax's tracing and compile
                       time (torch's first-call overhead beside it).

The steady-state row also gives each side's GFLOP/s: XLA's FLOP count of the compiled jax
program (``cost_analysis``; the same work on both sides) over the median time, and its
fraction of this machine's fp32 peak, measured at the start as the faster of a jitted jax
and a torch 2048 x 2048 matmul, 8192 x 8192 on a GPU (``common.measured_peak_gflops``).

The 1-minute load average before and after the run is printed: on a shared machine,
other processes distort the timings. VGG16's forward speedup is also printed as an
acceptance row for ``python -m benchmarks`` (target ``vgg16_forward``).

On a machine where jax's default backend is a GPU and ``torch.cuda.is_available()``,
both run on the GPU (torch with ``cudnn.benchmark=True`` and ``cuda.synchronize``).
TF32 is switched off on both sides for a fair float32 comparison (jax's default matmul
and convolution precision on GPU may use TF32); ``--allow-tf32`` leaves both at TF32.
``--dtype bfloat16`` times both sides with bfloat16 weights and inputs, and the agreement
lines give each side's error against torch's float32 result on the same weights and inputs.

Run (from the repository root)::

    PYTHONPATH=. python benchmarks/bench_models.py
    PYTHONPATH=. python benchmarks/bench_models.py --models alexnet --batch 32 --size 128 \\
        --pairs 10 --out /tmp/bench.md

The default run took about 3 minutes (2 min 40 s) on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import functools
import os
import platform
import statistics
import sys
import time

import numpy as np

from common import (PROFILE_CALLS, add_pairs_option, add_tf32_option, add_xla_option,
                    apply_xla_option, emit_row, kernel_profile, kernel_summary,
                    measured_peak_gflops, speedup, time_alternating, torch_device, torch_waiter, write_atomic, xla_flops)

MODELS = ("alexnet", "vgg16", "googlenet")
REL_TOL = 1e-4  # agreement above this is flagged in the output


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=",".join(MODELS),
                   help="comma-separated subset of %s (default: all)" % ",".join(MODELS))
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=224, help="image height = width (pixels)")
    add_pairs_option(p, 5)
    p.add_argument("--warmup", type=int, default=1, help="untimed calls before timing")
    p.add_argument("--tasks", default="forward,grad", help="comma-separated: forward,grad")
    add_tf32_option(p)
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                   help="weights and inputs in this dtype on both sides (default float32); with "
                        "bfloat16 the agreement column gives each side's error against torch's "
                        "float32 result on the same weights and inputs")
    p.add_argument("--out", default=None, help="also write the markdown report to this file")
    p.add_argument("--profile", action="store_true",
                   help="GPU only: after timing, profile each side's kernels (torch.profiler "
                        "over CUDA activity, which records jax's kernels too) and report the "
                        "device time, launches, layout conversions and longest kernels")
    add_xla_option(p)
    args = p.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    bad = [m for m in args.models if m not in MODELS]
    if bad:
        p.error(f"unknown model(s) {bad}; choose from {list(MODELS)}")
    args.tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if any(t not in ("forward", "grad") for t in args.tasks):
        p.error("--tasks takes forward and/or grad")
    if args.pairs < 1 or args.warmup < 0:
        p.error("--pairs must be >= 1 and --warmup >= 0")
    return args


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def torch_module(name: str):
    import torch
    import torchvision

    torch.manual_seed(0)
    if name == "alexnet":
        m = torchvision.models.alexnet(weights=None)
    elif name == "vgg16":
        m = torchvision.models.vgg16(weights=None)
    elif name == "googlenet":
        m = torchvision.models.googlenet(weights=None, init_weights=True, aux_logits=False)
    else:
        raise ValueError(name)
    m.eval()
    for p in m.parameters():
        p.requires_grad_(False)  # input gradient only, as in jax
    return m


def rel_err(a, b) -> float:
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def cast_floats(tree, dtype):
    """``tree`` with every floating-point leaf cast to ``dtype`` (integer leaves kept)."""
    import jax
    import jax.numpy as jnp

    return jax.tree_util.tree_map(
        lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree)


def zero_final_bias(tm, variables):
    """Copies of (torch module, jax variables) with the last Linear's bias set to zero.

    With random initializations the features entering the last layer can be tiny
    (torchvision's GoogLeNet init gives |logits - bias| ~ 1e-12 against a bias ~ 3e-2),
    so the logits equal the bias to float32 precision and comparing logits would test
    nothing. The forward agreement is therefore measured on these bias-free copies.
    """
    import copy

    import jax
    import torch

    tm0 = copy.deepcopy(tm)
    last = [mod for mod in tm0.modules() if isinstance(mod, torch.nn.Linear)][-1]
    b = last.bias.detach().cpu().numpy().copy()
    with torch.no_grad():
        last.bias.zero_()
    hits = []

    def zero(leaf):
        a = np.asarray(leaf)
        if a.shape == b.shape and np.array_equal(a, b):
            hits.append(1)
            return jax.numpy.zeros_like(leaf)
        return leaf

    v0 = jax.tree_util.tree_map(zero, variables)
    if len(hits) != 1:
        raise RuntimeError(f"found {len(hits)} jax leaves equal to the final torch bias, expected 1")
    return tm0, v0


def bench_model(name, args, on_gpu, jdev, log):
    import jax
    import jax.numpy as jnp
    import torch

    from weights_port import from_torchvision

    n, s = args.batch, args.size
    tdev = torch.device("cuda" if on_gpu else "cpu")
    wait = torch_waiter(tdev)

    def tsync(_):  # after a torch call: its result is ready
        wait()

    tm = torch_module(name)
    model, variables = from_torchvision(tm)
    tm = tm.to(tdev)
    variables = jax.device_put(variables, jdev)

    x_np = np.random.default_rng(0).standard_normal((n, s, s, 3), dtype=np.float32)
    t_np = (np.arange(n) % 1000).astype(np.int32)
    x_j, t_j = jax.device_put(x_np, jdev), jax.device_put(t_np, jdev)
    x_t = torch.from_numpy(x_np.transpose(0, 3, 1, 2).copy()).to(tdev)
    t_t = torch.from_numpy(t_np).long().to(tdev)
    rows_t = torch.arange(n, device=tdev)

    def torch_grad(m, x):
        x = x.detach().clone().requires_grad_(True)
        m(x)[rows_t, t_t].sum().backward()
        return x.grad

    low = args.dtype != "float32"  # then time the low-precision twins, checked against float32
    jcast = functools.partial(cast_floats, dtype=getattr(jnp, args.dtype))
    if low:
        tm32, v32, x_j32, x_t32 = tm, variables, x_j, x_t
        tm = copy.deepcopy(tm32).to(getattr(torch, args.dtype))
        variables, x_j, x_t = jcast(v32), jcast(x_j32), x_t32.to(getattr(torch, args.dtype))

    def j_forward(v, x):
        return model.apply(v, x)

    def j_objective(x, v, t):
        return model.apply(v, x)[jnp.arange(x.shape[0]), t].sum()

    j_grad = jax.grad(j_objective)  # w.r.t. x only

    def t_forward():
        with torch.no_grad():
            return tm(x_t)

    def t_grad():
        return torch_grad(tm, x_t)

    results = {}
    for task in args.tasks:
        if task == "forward":
            fn, jargs, tfn = j_forward, (variables, x_j), t_forward
        else:
            fn, jargs, tfn = j_grad, (x_j, variables, t_j), t_grad

        # first calls: jax traces, compiles and runs; torch runs (its own first-call set-up)
        t0 = time.perf_counter()
        compiled = jax.jit(fn).lower(*jargs).compile()
        jax.block_until_ready(compiled(*jargs))
        jax_first = time.perf_counter() - t0
        flops = xla_flops(fn, *jargs)
        t0 = time.perf_counter()
        tsync(tfn())
        torch_first = time.perf_counter() - t0

        # agreement on the same inputs and weights (outside the timed region)
        # (in bfloat16: each side against torch's float32 result, zeroed in float32 first)
        host = lambda t: t.detach().float().cpu().numpy()  # noqa: E731
        if task == "forward":
            tm0, v0 = zero_final_bias(tm32 if low else tm, v32 if low else variables)
            with torch.no_grad():
                ref = host(tm0(x_t32)) if low else None
                out_t = host(tm0.to(x_t.dtype)(x_t))
            out_j = np.asarray(compiled(jcast(v0), x_j))
            del tm0, v0
        else:
            out_j = np.asarray(compiled(*jargs))
            out_t = host(tfn()).transpose(0, 2, 3, 1)
            ref = host(torch_grad(tm32, x_t32)).transpose(0, 2, 3, 1) if low else None
        err = rel_err(out_j, out_t if ref is None else ref)
        torch_err = None if ref is None else rel_err(out_t, ref)

        log(f"  {name} {task}: first call jax {jax_first:.2f} s, torch {torch_first:.2f} s, "
            f"max rel err {err:.2e}; timing ...")
        (tt, jt), _ = time_alternating([lambda: tsync(tfn()),
                                        lambda: jax.block_until_ready(compiled(*jargs))],
                                       args.pairs, args.warmup)
        log(f"  {name} {task}: torch median {statistics.median(tt):.4f} s, "
            f"jax median {statistics.median(jt):.4f} s, speedup {speedup(tt, jt):.2f}")
        results[task] = dict(torch=tt, jax=jt, jax_first=jax_first, torch_first=torch_first,
                             err=err, torch_err=torch_err, flops=flops)
        if args.profile:
            results[task]["kernels"] = {
                "jax": kernel_profile(lambda: compiled(*jargs).block_until_ready(), wait),
                "torch": kernel_profile(tfn, wait)}
        compiled = None  # free the executable before the next task
    tm = variables = None  # free the weights before the next model
    return results


def fmt_times(ts):
    return f"{statistics.median(ts):.4f} ({min(ts):.4f})"


def report(all_results, args, info) -> str:
    lines = [
        f"Batch {args.batch}, {args.size} x {args.size} px, {args.dtype}, device: {info['device']}; "
        f"seconds: median (minimum) of {args.pairs} paired rounds (torch, jax) after the first "
        f"calls and {args.warmup} warm-up; speedup = median over the rounds of torch / jax "
        f"time. First call: jax traces, compiles and runs. Compile: first call minus the "
        f"median. GFLOP/s: XLA's FLOP count of the jax program (the same work on both sides) "
        f"over the median time, and its fraction of the measured fp32 matmul peak "
        f"({info['peak']}).",
        "",
        "| model | task | torch s | jax s | speedup vs torch (>1: jaxviz faster) "
        "| torch GFLOP/s (of peak) | jax GFLOP/s (of peak) |",
        "|---|---|---|---|---|---|---|",
    ]
    peak = info["peak_gflops"]

    def rate(flops, seconds):
        if not flops:
            return "-"
        gflops = flops / seconds / 1e9
        return f"{gflops:.1f} ({gflops / peak:.0%})"
    for name, res in all_results.items():
        for task, r in res.items():
            tmed, jmed = statistics.median(r["torch"]), statistics.median(r["jax"])
            lines += [
                f"| {name} | {task} | {fmt_times(r['torch'])} | {fmt_times(r['jax'])} "
                f"| {speedup(r['torch'], r['jax']):.2f} | {rate(r['flops'], tmed)} "
                f"| {rate(r['flops'], jmed)} |",
                f"| {name} | {task}, first call | {r['torch_first']:.4f} | {r['jax_first']:.4f} "
                f"| {r['torch_first'] / r['jax_first']:.2f} | - | - |",
                f"| {name} | {task}, compile (first call - median) | "
                f"{r['torch_first'] - tmed:.4f} | {r['jax_first'] - jmed:.4f} | - | - | - |"]
    low = args.dtype != "float32"
    if low:
        lines += ["", f"Agreement in {args.dtype}: each side's result against torch's float32 "
                  "result on the same weights and inputs (max |x - ref| / max |ref|; forward: "
                  "logits with the last bias zeroed, grad: input gradient); GFLOP/s are against "
                  "the float32 peak:", ""]
    else:
        lines += ["", "Agreement, jax vs torch on the same weights and inputs "
                  "(max |jax - torch| / max |torch|; forward: logits with the last bias zeroed, "
                  "grad: input gradient):", ""]
    for name, res in all_results.items():
        parts = []
        for task, r in res.items():
            if low:
                parts.append(f"{task} jax {r['err']:.1e}, torch {r['torch_err']:.1e}")
                continue
            flag = f" **ABOVE {REL_TOL:g}**" if not r["err"] <= REL_TOL else ""
            parts.append(f"{task} {r['err']:.1e}{flag}")
        lines.append(f"- {name}: " + ", ".join(parts))
    if not low and any(task == "grad" and not r["err"] <= REL_TOL for res in all_results.values()
                       for task, r in res.items()):
        lines += ["", "Note: an input gradient through max pooling is discontinuous where a "
                  "window's two largest inputs nearly tie; float32 rounding can then send the "
                  "gradient to a different element in jax and torch (and either may differ "
                  "from float64). Rerun the comparison in float64 to tell this from a porting "
                  "error (benchmarks/RESULTS.md)."]
    profiled = [(name, task, r["kernels"]) for name, res in all_results.items()
                for task, r in res.items() if "kernels" in r]
    if profiled:
        lines += ["", f"Kernels (`--profile`: {PROFILE_CALLS} calls each side under "
                  "torch.profiler):", ""]
        lines += [f"- {name} {task}, {side}: {kernel_summary(k)}"
                  for name, task, kernels in profiled for side, k in kernels.items()]
    lines += ["", f"Machine: {info['machine']}",
              f"Load average (1 min) before / after: {info['load']}",
              f"Date: {info['date']}", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    # NCHW convolutions on a GPU are measured for float32 only (jaxviz/gpu.py)
    xla = apply_xla_option(args, gpu_nchw=args.dtype == "float32")
    # jax and torch share the GPU when there is one: let jax allocate on demand.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

    import jax
    import torch
    import torchvision

    tdev, device = torch_device(args.allow_tf32)
    on_gpu = tdev.type == "cuda"
    if args.profile and not on_gpu:
        raise SystemExit(f"bench_models.py: --profile needs a GPU that jax and torch both see; "
                         f"this run is on {device}")
    jdev = jax.devices()[0] if on_gpu else jax.devices("cpu")[0]

    machine = (f"{cpu_model()}, {os.cpu_count()} cores; {xla}; Python {platform.python_version()}, "
               f"jax {jax.__version__}, torch {torch.__version__} "
               f"({torch.get_num_threads()} threads), torchvision {torchvision.__version__}")
    load_before = os.getloadavg()[0]
    info = dict(device=device, machine=machine,
                date=datetime.date.today().isoformat())

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    log(f"device: {device}\nmachine: {machine}")
    peak = measured_peak_gflops()
    info["peak_gflops"], info["peak"] = peak.best, peak.phrase()
    all_results = {}
    t_start = time.perf_counter()
    for name in args.models:
        log(f"{name} ...")
        all_results[name] = bench_model(name, args, on_gpu, jdev, log)
    log(f"total {time.perf_counter() - t_start:.0f} s")
    info["load"] = f"{load_before:.2f} / {os.getloadavg()[0]:.2f}"

    text = report(all_results, args, info)
    print(text)
    if "forward" in all_results.get("vgg16", {}):
        r = all_results["vgg16"]["forward"]
        emit_row("vgg16_forward", f"VGG16 forward, batch {args.batch}, {args.size} px", "torch",
                 speedup(r["torch"], r["jax"]), args.pairs)
    if args.out:
        write_atomic(args.out, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
