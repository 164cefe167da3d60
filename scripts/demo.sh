#!/usr/bin/env bash
# Install everything, decompose the example corpus with the real SmolLM2-135M model (window 16),
# write the paper's ΔLP text for every batch, and print a short ΔLP summary.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
. .venv/bin/activate
OUT=${OUT:-output}
python run_decompose.py examples/corpus.sentitems smollm2-135m 16 --output-dir "$OUT"
for d in "$OUT"/d_corpus_smollm2-135m_*.pt; do
  id=$(basename "$d" .pt); id=${id#d_}
  python representations_to_deltalp.py "$id" smollm2-135m --output-dir "$OUT" > "$OUT/$id.deltalp"
done
python scripts/deltalp_summary.py --output-dir "$OUT" --model smollm2-135m
