#!/usr/bin/env bash
# The GPU check, one command for a machine with a CUDA device (Ray not needed):
#
#     bash benchmarks/gpu_check.sh OUT
#
# runs, each step under a time limit of its own (8 minutes in all at most):
#   1. every CUDA test, with CVAE_REQUIRE_CUDA=1 so that a test skipped for want of a device fails;
#   2. benchmarks/bank_throughput.py: banks of 1, 4, 16, 42 and 64 members eager, of 42 compiled (the
#      Lagrangians and backward as CUDA graphs; its wall time against its steady rate shows the compile
#      time), and of 42 eager in bf16 (--precision bf16);
#   3. benchmarks/train_step.py --device cuda, eager and compiled (a compiled CUDA run is a compiled
#      stacked bank of one);
#   4. benchmarks/sweep_throughput.py for 1 and 4 runs sharing the GPU;
# with each step's log in OUT/STEP.log and a one-page summary in OUT/summary.md (the card, each
# step's exit status and time, and the tables). A step that fails or runs out of time is recorded,
# and the next one runs.
#
# It needs torch with CUDA, cooper-optim, numpy, scipy, scikit-learn, matplotlib, tqdm, pytest and hypothesis;
# the package itself is imported from this checkout (installed or not).
set -u
OUT=${1:?usage: bash benchmarks/gpu_check.sh OUT}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
cd "$(dirname "$0")/.." || exit 2
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
SUMMARY="$OUT/summary.md"
{
  echo "# GPU check, $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  echo '```'
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1
  python -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda)" 2>&1
  git log -1 --format='commit %h %cs' 2>/dev/null || true
  echo '```'
} > "$SUMMARY"

step() {  # step NAME SECONDS COMMAND...: run it with its log in OUT/NAME.log, and its outcome in the summary
  local name=$1 limit=$2 start rc
  shift 2
  start=$(date +%s)
  timeout --signal=INT --kill-after=20 "$limit" "$@" > "$OUT/$name.log" 2>&1
  rc=$?
  {
    echo
    echo "## $name: exit $rc in $(( $(date +%s) - start )) s (limit $limit s)"
    echo '```'
    grep -E "passed|failed|error|steps/s|N= |^ *[0-9]+ +[0-9.]+|^cuda|ratio" "$OUT/$name.log" | tail -40
    echo '```'
  } >> "$SUMMARY"
}

CUDA_TESTS=(tests/test_cuda.py "tests/test_fast_training.py::test_cuda_steps_never_synchronise_with_the_host"
  "tests/test_fast_training.py::test_cuda_resume_gives_the_same_run_up_to_rounding"
  "tests/test_dsprites.py::test_cuda_batches_match_the_cpu_ones"
  "tests/test_benchmark_datasets.py::test_cuda_batches_never_wait_for_the_host_and_match_the_cpu_images"
  "tests/test_kl_budget.py::test_a_budget_on_cuda_never_synchronises_with_the_host")
BANK=(python benchmarks/bank_throughput.py --device cuda)
CVAE_REQUIRE_CUDA=1 step cuda-tests 140 python -m pytest -q -p no:cacheprovider -rfEs "${CUDA_TESTS[@]}"
step bank-throughput 55 "${BANK[@]}" --members 1 4 16 42 64 --steps 300 --warmup 100 --compile off
step bank-throughput-compiled 140 "${BANK[@]}" --members 42 --steps 1000 --compile on
step bank-throughput-bf16 30 "${BANK[@]}" --members 42 --steps 300 --warmup 100 --compile off --precision bf16
step train-step 35 python benchmarks/train_step.py --device cuda --steps 1000 --repeats 1 --no-compile
step train-step-compiled 45 python benchmarks/train_step.py --device cuda --steps 1000 --repeats 1 --compile
step sweep-throughput 35 python benchmarks/sweep_throughput.py --device cuda --runs 1 4 --steps 400 --warmup 100
cat "$SUMMARY"
