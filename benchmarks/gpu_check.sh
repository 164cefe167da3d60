#!/usr/bin/env bash
# One-command GPU check (not part of CI): on a CUDA machine, run the precision and identity tests on the GPU,
# then the speed benchmark for fp32 / tf32 / bf16, and print one table.
#
#     bash benchmarks/gpu_check.sh              # from the repository root, with torch (CUDA) installed
#     LENGTH=2048 WINDOW=100 bash benchmarks/gpu_check.sh
#
# Needs Python with a CUDA build of torch, and transformers >= 5.24 (the script says what is missing).
# Figures are written to ${RESULTS:-gpu_check} (one JSON per benchmark run, the test log, table.txt).
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
RESULTS=${RESULTS:-gpu_check}
LENGTH=${LENGTH:-1024}
WINDOW=${WINDOW:-50}
mkdir -p "$RESULTS"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

"$PYTHON" - <<'EOF' || exit 2
import sys
import torch
import transformers
print(f"torch {torch.__version__}, transformers {transformers.__version__}, CUDA available: {torch.cuda.is_available()}")
if not torch.cuda.is_available():
    sys.exit("gpu_check.sh: no CUDA device is visible; run it on a GPU machine")
print(f"device: {torch.cuda.get_device_name(0)}")
major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
if (major, minor) < (5, 24):
    sys.exit("gpu_check.sh: transformers >= 5.24 is needed (pip install 'transformers>=5.24,<6', or carry its wheel)")
EOF

echo "== tests on the GPU (HFP_TEST_DEVICE=cuda)"
HFP_TEST_DEVICE=cuda "$PYTHON" -m pytest -q -p no:cacheprovider tests/unit/test_precision.py 2>&1 | tee "$RESULTS/tests.log"
tests=${PIPESTATUS[0]}

echo "== speed and accuracy: OPT-125m shape, T=$LENGTH, window $WINDOW"
"$PYTHON" benchmarks/bench_decompose.py --device cuda --precision all --length "$LENGTH" --window "$WINDOW" \
    --mlp-path dense --repeat 3 --json "$RESULTS/opt-125m.json" || exit 1
"$PYTHON" benchmarks/bench_decompose.py --device cuda --precision all --shape smollm2-135m --length "$LENGTH" \
    --window "$WINDOW" --repeat 3 --json "$RESULTS/smollm2-shape.json" || exit 1

"$PYTHON" - "$RESULTS" <<'EOF' | tee "$RESULTS/table.txt"
import json, os, sys
folder = sys.argv[1]
print()
print(f"{'model':<32} {'precision':>9} {'equiv/src':>10} {'speed-up':>9} {'identity':>10} {'ΔLP max':>9} "
      f"{'ΔLP median':>11} {'Spearman':>9}")
for name in ("opt-125m.json", "smollm2-shape.json"):
    figures = json.load(open(os.path.join(folder, name)))
    runs = figures["runs"]
    for precision, run in runs.items():
        identity = max(run.get("identity", figures.get("identity_fp32", [0.0])))
        delta = run.get("fast_head_product", {})
        speed = runs["fp32"]["decompose_s"] / run["decompose_s"]
        print(f"{figures['model']:<32} {precision:>9} {run['forward_equivalents_per_source']:>10.3f} {speed:>8.2f}x "
              f"{identity:>10.2e} {delta.get('max_abs_bits', 0.0):>9.4f} {delta.get('median_abs_bits', 0.0):>11.2e} "
              f"{delta.get('spearman', 1.0):>9.5f}")
EOF
exit "$tests"
