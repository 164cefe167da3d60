"""Which causal-LM families of the installed Transformers can be decomposed, and why the others cannot.

:func:`coverage` lists every ``model_type`` Transformers maps to a causal-LM class, each with its adapter or
the reason it has none, so a user sees before loading whether a model works. The reasons below are stated
for the families known to be out of reach of the method as it stands; every other family is "not adapted
yet": one adapter file adds it (``docs/architecture.md``).
"""

from __future__ import annotations

#: families with no attention probabilities to freeze in some or all layers (the decomposition needs every
#: token-mixing step to be a frozen linear map of the values)
_RECURRENT = ("mamba", "mamba2", "falcon_mamba", "rwkv", "xlstm", "recurrent_gemma", "jamba", "bamba", "zamba",
              "zamba2", "nemotron_h", "granitemoehybrid", "falcon_h1", "olmo_hybrid", "bailing_hybrid", "lfm2",
              "lfm2_moe", "qwen3_next", "kimi_linear", "minimax")
#: encoder-decoder or bidirectional families that Transformers also offers with a causal-LM head
_NOT_DECODER = ("bart", "bert", "bert-generation", "big_bird", "bigbird_pegasus", "blenderbot", "blenderbot-small",
                "camembert", "data2vec-text", "electra", "ernie", "marian", "mbart", "megatron-bert", "mvp", "pegasus",
                "plbart", "prophetnet", "rembert", "roberta", "roberta-prelayernorm", "roc_bert", "roformer",
                "trocr", "whisper", "xlm", "xlm-roberta", "xlm-roberta-xl", "xmod", "xlnet", "musicgen",
                "musicgen_melody", "moshi", "git")
#: other architectures whose token mixing is not (only) softmax attention over the sequence
_OTHER = {"reformer": "locality-sensitive-hashing attention over chunks, not one probability per token pair",
          "diffllama": "differential attention subtracts two softmax maps (a signed mixing: to be written as data)",
          "blt": "byte-latent patches: sources are bytes grouped by a learned patcher"}


def _reason(model_type: str) -> str:
    if model_type in _RECURRENT:
        return "state-space, recurrent or linear-attention layers: no attention probabilities to freeze"
    if model_type in _NOT_DECODER:
        return "an encoder or encoder-decoder family (bidirectional or cross-attention layers): out of scope"
    if model_type in _OTHER:
        return _OTHER[model_type]
    return "not adapted yet: one adapter file adds it (docs/architecture.md)"


def coverage() -> list[dict]:
    """Every causal-LM ``model_type`` the installed Transformers knows: ``{model_type, supported, adapter,
    reason}`` (``reason`` None when supported), sorted by name."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    from .registry import UnsupportedArchitectureError, get_adapter

    rows = []
    for model_type in sorted(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES):
        try:
            adapter = get_adapter(model_type)
        except UnsupportedArchitectureError:
            rows.append(dict(model_type=model_type, supported=False, adapter=None, reason=_reason(model_type)))
        else:
            rows.append(dict(model_type=model_type, supported=True, adapter=adapter.name, reason=None))
    return rows


def coverage_table(rows: list[dict] | None = None) -> str:
    """The README's coverage table (Markdown): supported families first, then the others with their reason."""
    rows = coverage() if rows is None else rows
    supported = [r for r in rows if r["supported"]]
    lines = [f"{len(supported)} of the {len(rows)} causal-LM model types of the installed Transformers are "
             "supported.", "", "| `model_type` | decomposed | why not |", "|---|---|---|"]
    for row in sorted(rows, key=lambda r: (not r["supported"], r["model_type"])):
        status = f"yes ({row['adapter']})" if row["supported"] else "no"
        lines.append(f"| `{row['model_type']}` | {status} | {row['reason'] or ''} |")
    return "\n".join(lines)
