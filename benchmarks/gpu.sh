#!/usr/bin/env bash
# The GPU benchmarks in one go, for a machine with one CUDA GPU that jax and torch both see:
#   bash benchmarks/gpu.sh [OUT_DIR]   (from the repository root; on an H100 about 8.5 minutes,
#                                      about 14 with GPU_TF32=1)
# Steps, most wanted first (each has its own time limit, and the script goes on after a
# failed step, so one failure still leaves the others' figures):
# 1. `python -m benchmarks --device gpu --pairs 3` with full settings over the workloads with
#    a GPU torch side (models at batch 8 and 224 px, SmoothGrad 50, occlusion, a 32-channel
#    sweep, expanded weights), every contender on the GPU, strict fp32 in both frameworks;
# 2. the sweep at 256 channels (both configurations, 32 steps): a batch that fills the GPU;
# 3. the tests most sensitive to the device (float32 comparisons of the split occlusion
#    path and the lucid transforms), at full float32 precision;
# 4. with GPU_TF32=1: SmoothGrad and occlusion with TF32 allowed in both frameworks, each
#    map's error against its strict-fp32 map;
# 5. the GPU target itself: AlexNet conv5, 256 channels x 512 steps at 128 px, the lucid
#    configuration, strict fp32 (one timed round; about 3 minutes, torch's batched twin
#    taking 37 s a call on an H100), and with GPU_TF32=1 again with TF32 allowed;
# 6. the reference libraries on the GPU (`bench_peers.py`, 8 images, and the CAM family on
#    64), when Captum, pytorch-grad-cam and zennit import;
# 7. the models at batch 32 in float32 and in bfloat16 (each side's bfloat16 error against
#    torch's float32 result);
# 8. the models' kernels (`--profile`) with jaxviz.gpu's NCHW layouts and with XLA's own
#    (`--xla-default`): device time, launches and layout conversions on each side.
# Float32 steps run jax's convolutions in NCHW layouts (jaxviz.gpu.use_nchw_convolutions);
# bfloat16 keeps XLA's.
# GPU_STEPS=a,b runs only the named steps (suite, sweep-256, tests, attribution-tf32,
# sweep-fp32, sweep-tf32, peers, cams, models-fp32, models-bf16, profile, profile-xla).
# Reports go to OUT_DIR (default benchmarks/gpu-out).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-benchmarks/gpu-out}
mkdir -p "$out"
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
py=${PYTHON:-python3}
status=0
step() {  # step NAME SECONDS COMMAND...: runs COMMAND under a time limit, output to OUT_DIR/NAME.log
  local name=$1 limit=$2; shift 2
  if [ -n "${GPU_STEPS:-}" ] && [[ ",$GPU_STEPS," != *",$name,"* ]]; then
    return 0
  fi
  echo "== $name (limit ${limit} s): $*"
  local t0=$SECONDS
  timeout "$limit" "$@" 2>&1 | tee "$out/$name.log" | grep -v '^@@bench-row' | tail -n 40
  local rc=${PIPESTATUS[0]}
  echo "== $name: exit $rc after $((SECONDS - t0)) s"
  [ "$rc" = 0 ] || status=1
}
if ! "$py" -c "import jax, torch, sys; sys.exit(jax.default_backend() != 'gpu' or not torch.cuda.is_available())" \
    2>/dev/null; then
  echo "benchmarks/gpu.sh: needs one GPU that jax and torch (in $py; PYTHON= for another) both" \
       "see; on a CPU run: python -m benchmarks [--quick]" >&2
  exit 2
fi
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee "$out/gpu.txt"
"$py" -c "import jax, torch; print('jax', jax.__version__, jax.devices(), '| torch', torch.__version__, torch.cuda.is_available())" | tee -a "$out/gpu.txt"
sweep=(benchmarks/bench_synthesis.py --channels 256 --loop-channels 1)
step suite 240 "$py" -m benchmarks --device gpu --pairs 3 --only models,attribution,synthesis,weights \
  --out "$out/benchmarks.md"
step sweep-256 150 "$py" "${sweep[@]}" --steps 32 --pairs 2 --out "$out/sweep-256.md"
step tests 100 env JAX_DEFAULT_MATMUL_PRECISION=highest "$py" -m pytest -q -p no:cacheprovider \
  -p no:benchmark -n 8 tests/test_occlusion_reuse.py tests/test_transforms_lucid.py
if [ "${GPU_TF32:-0}" = 1 ]; then
  step attribution-tf32 120 "$py" benchmarks/bench_attribution.py --pairs 3 --allow-tf32 \
    --out "$out/attribution-tf32.md"
fi
step sweep-fp32 300 "$py" "${sweep[@]}" --steps 512 --pairs 1 --configs lucid --out "$out/sweep-fp32.md"
if [ "${GPU_TF32:-0}" = 1 ]; then
  step sweep-tf32 200 "$py" "${sweep[@]}" --steps 512 --pairs 1 --configs lucid --allow-tf32 \
    --out "$out/sweep-tf32.md"
fi
if "$py" -c "import captum.attr, pytorch_grad_cam, zennit" 2>/dev/null; then
  step peers 300 "$py" benchmarks/bench_peers.py --pairs 3 --batch 8 --out "$out/peers.md"
  step cams 150 "$py" benchmarks/bench_peers.py --pairs 3 --batch 64 \
    --only GradCAM,GradCAMPlusPlus,XGradCAM,HiResCAM,LayerCAM,EigenCAM --out "$out/cams.md"
else
  echo "== peers, cams: skipped (Captum, pytorch-grad-cam or zennit does not import)"
fi
step models-fp32 150 "$py" benchmarks/bench_models.py --batch 32 --pairs 3 --out "$out/models-fp32.md"
step models-bf16 150 "$py" benchmarks/bench_models.py --batch 32 --pairs 3 --dtype bfloat16 \
  --out "$out/models-bf16.md"
step profile 150 "$py" benchmarks/bench_models.py --batch 32 --pairs 3 --profile \
  --out "$out/models-profile.md"
step profile-xla 150 "$py" benchmarks/bench_models.py --batch 32 --pairs 3 --profile --xla-default \
  --out "$out/models-profile-xla.md"
exit $status
