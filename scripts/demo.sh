#!/usr/bin/env bash
# Install everything, then the paper's two-script pipeline on the real SmolLM2-135M: decompose the example
# corpus (window 16), write the paper's ΔLP text for every piece, and print a short ΔLP summary. The time of
# the work after installation is printed at the end. HFP_SKIP_INSTALL=1 skips the installation step.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${HFP_SKIP_INSTALL:-0}" != "1" ]; then
  bash scripts/install.sh
fi
. .venv/bin/activate
OUT=${OUT:-output}
start=$(date +%s.%N)
python run_decompose.py examples/corpus.sentitems smollm2-135m 16 --output-dir "$OUT"
# the paper's second script, once per piece (as many at a time as there are cores)
jobs=$(nproc 2>/dev/null || echo 2)
for record in "$OUT"/r_corpus_smollm2-135m_*.json; do
  id=$(basename "$record" .json); id=${id#r_}
  python representations_to_deltalp.py "$id" smollm2-135m --output-dir "$OUT" > "$OUT/$id.deltalp" &
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n; done
done
wait
python scripts/deltalp_summary.py --output-dir "$OUT" --model smollm2-135m
end=$(date +%s.%N)
printf '\nwrote %s (ΔLP text: %s/*.deltalp); the work after installation took %.1f s\n' "$OUT" "$OUT" "$(echo "$end - $start" | bc)"
