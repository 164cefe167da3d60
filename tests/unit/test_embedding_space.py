"""Embedding-space projections (Dar et al. 2023) on tiny random models of every family.

Blocked top-k vs dense, the threshold search, filters, bounded memory on a 50k vocabulary, and per-head /
per-neuron weights
checked against the modules' real computation.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch
import transformers
from helpers import assert_close_rel

from huggingface_patch.architectures import model_parts
from huggingface_patch.embedding_space import (
    ParameterIndexError,
    TokenFilter,
    WordListError,
    approx_topk,
    blocked_topk,
    embedding_matrix,
    ff_vectors,
    head_map_factors,
    head_weights,
    neuron_top_tokens,
    num_heads,
    pair_groups,
    read_word_list,
    threshold_search,
    top_head_pairs,
    top_tokens,
    vocabulary,
)
from huggingface_patch.embedding_space.align import parameter_alignment
from huggingface_patch.embedding_space.projections import LatentAttentionError, has_head_weights
from huggingface_patch.embedding_space.tsne import tsne_html, tsne_top_tokens
from huggingface_patch.layer_states import project_to_vocab
from huggingface_patch.testing import TINY_KINDS, build_tiny_model, tokenizer_folder

#: fp32 tolerance (relative to the largest expected value) for re-computed module outputs
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def plain_models():
    return {kind: build_tiny_model(kind, decomposed=False) for kind in TINY_KINDS}


@pytest.fixture(scope="module")
def byte_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tokenizer_folder())


def _dense_top(matrix: torch.Tensor, k: int):
    values, flat = matrix.flatten().topk(k)
    return values, {(int(i) // matrix.shape[1], int(i) % matrix.shape[1]) for i in flat}


# --------------------------------------------------------------------------- blocked top-k


@pytest.mark.parametrize("block_bytes", [1, 8 * 257 * 7, 10**9])
def test_blocked_topk_equals_dense(block_bytes):
    gen = torch.Generator().manual_seed(0)
    f64 = dict(generator=gen, dtype=torch.float64)
    left, right = torch.randn(300, 8, **f64), torch.randn(8, 257, **f64)
    dense = left @ right
    for k in (1, 50, 3000):
        got = blocked_topk(left, right, k, max_block_bytes=block_bytes, dtype=torch.float64)
        values, pairs = _dense_top(dense, k)
        # row blocks may round differently from one big product in the last bit
        assert torch.allclose(got.values, values, rtol=1e-12, atol=0), f"k={k}: values differ"
        assert set(zip(got.rows.tolist(), got.cols.tolist())) == pairs
        assert torch.allclose(dense[got.rows, got.cols], got.values, rtol=1e-12, atol=0)
    assert got.stats["blocks"] == -(-300 // got.stats["block_rows"])


def test_blocked_topk_with_excluded_pairs_equals_masked_dense():
    gen = torch.Generator().manual_seed(1)
    f64 = dict(generator=gen, dtype=torch.float64)
    left, right = torch.randn(120, 6, **f64), torch.randn(6, 120, **f64)
    groups = torch.randint(0, 30, (120,), generator=gen)
    dense = (left @ right).masked_fill(groups[:, None] == groups[None, :], float("-inf"))
    got = blocked_topk(left, right, 400, row_groups=groups, col_groups=groups, max_block_bytes=2000,
                       dtype=torch.float64)
    values, pairs = _dense_top(dense, 400)
    assert torch.allclose(got.values, values, rtol=1e-12, atol=0)
    assert set(zip(got.rows.tolist(), got.cols.tolist())) == pairs
    assert not (groups[got.rows] == groups[got.cols]).any()
    # asking for more than remain returns only the non-excluded entries
    everything = blocked_topk(left, right, 120 * 120, row_groups=groups, col_groups=groups, max_block_bytes=2000,
                              dtype=torch.float64)
    assert len(everything) == int(torch.isfinite(dense).sum())


# --------------------------------------------------------------------------- threshold search


def test_threshold_search_follows_the_original_doubling_and_bisection():
    values = torch.arange(1000, dtype=torch.float64)  # count(> th) = 999 - floor(th) for 0 <= th < 999
    calls = []

    def count(th):
        calls.append(th)
        return int((values > th).sum())

    threshold, n, evaluations = threshold_search(count, min_k=40, max_k=60, th0=10, max_iters=10)
    assert 40 <= n <= 60 and n == count(threshold)
    assert calls[:7] == [10, 20, 40, 80, 160, 320, 640]  # doubling while more than max_k exceed the threshold
    assert all(low < high for low, high in zip(calls[:7], calls[1:7]))
    assert evaluations == len(calls) - 1


@pytest.mark.parametrize("min_k,max_k,th0,shift", [(10, 50, 1.0, 0.0), (500, 600, 10.0, 0.0), (5, 5, 0.5, 3.0),
                                                   (100, 20_000, 1.0, -50.0), (30, 40, 1e-3, 0.0)])
def test_approx_topk_returns_between_min_k_and_max_k(min_k, max_k, th0, shift):
    gen = torch.Generator().manual_seed(2)
    # a constant column shifts every entry (shift -50: all entries negative, the search cannot succeed)
    left = torch.cat([torch.randn(200, 4, generator=gen, dtype=torch.float64),
                      torch.ones(200, 1, dtype=torch.float64)], 1)
    right = torch.cat([torch.randn(4, 150, generator=gen, dtype=torch.float64),
                       torch.full((1, 150), shift, dtype=torch.float64)], 0)
    dense = left @ right
    got = approx_topk(left, right, min_k=min_k, max_k=max_k, th0=th0, max_block_bytes=3000, dtype=torch.float64)
    assert min_k <= len(got) <= max_k, got.stats
    values, pairs = _dense_top(dense, len(got))
    assert torch.allclose(got.values, values)
    assert set(zip(got.rows.tolist(), got.cols.tolist())) == pairs
    if got.stats["clamped"] is None:  # exactly the entries above the threshold found
        assert len(got) == int((dense > got.threshold).sum())


def test_approx_topk_rejects_bad_bounds():
    with pytest.raises(ValueError, match="min_k"):
        approx_topk(torch.ones(2, 1), torch.ones(1, 2), min_k=5, max_k=2)
    with pytest.raises(ValueError, match="th0"):
        threshold_search(lambda th: 0, th0=0)


def test_memory_stays_bounded_on_a_gpt2_sized_vocabulary():
    """V = 50257, hidden 16: the full matrix would take V*V*4 = 10 GB; the pass must peak far below it."""
    script = textwrap.dedent("""
        import json, resource, torch
        from huggingface_patch.embedding_space import approx_topk
        torch.set_num_threads(2)
        gen = torch.Generator().manual_seed(0)
        embedding = torch.randn(16, 50257, generator=gen)           # GPT-2-shaped E (H, V)
        w_v, w_o = torch.randn(16, 4, generator=gen), torch.randn(4, 16, generator=gen)
        left, right = embedding.t() @ w_v, w_o @ embedding            # (V, d), (d, V)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        result = approx_topk(left, right, min_k=500, max_k=20000, th0=1.0, max_block_bytes=16 * 2**20)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        print(json.dumps(dict(extra=after - before, n=len(result), stats=result.stats)))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    full = 50257 * 50257 * 4
    assert report["stats"]["matrix_entries"] == 50257 * 50257
    assert report["stats"]["block_bytes"] <= 16 * 2**20
    assert 500 <= report["n"] <= 20000
    assert report["extra"] < 400 * 2**20, f"peak grew by {report['extra'] / 2**20:.0f} MiB"
    assert report["extra"] < full / 25


# --------------------------------------------------------------------------- filters and display


class _StubTokenizer:
    """Just what :func:`vocabulary` reads (``added``: ``{id: special?}`` of added tokens)."""

    def __init__(self, pieces, special=(0,), added=None):
        self.pieces, self.all_special_ids = pieces, list(special)
        self.added_tokens_decoder = {i: transformers.AddedToken(pieces[i], special=flag)
                                     for i, flag in (added or {}).items()}

    def __len__(self):
        return len(self.pieces)

    def convert_ids_to_tokens(self, ids):
        return [self.pieces[i] for i in ids]


BPE_PIECES = ["<s>", "Ġcat", "cat", "Ġcats", "ĠParis", "Ġparis", "ĠcafÃ©", "Ġ123", "ing", "Ġhello!", "Ċ", "Ã"]


def test_display_of_byte_level_pieces():
    vocab = vocabulary(_StubTokenizer(BPE_PIECES), len(BPE_PIECES) + 2)
    assert vocab.style == "byte-bpe"
    shown = [vocab.display(i) for i in range(len(vocab))]
    assert shown[:10] == ["<s>", "cat", "#cat", "cats", "Paris", "paris", "café", "123", "#ing", "hello!"]
    assert shown[10] == "#\\n" and shown[11] == "#<0xC3>"  # control character escaped, half a character as bytes
    assert shown[12:] == ["<id 12>", "<id 13>"]  # embedding rows the tokenizer does not know


def test_display_of_sentencepiece_pieces():
    vocab = vocabulary(_StubTokenizer(["<s>", "▁cat", "ing", "<0x0A>", "▁Paris"]), 5)
    assert vocab.style == "sentencepiece"
    assert [vocab.display(i) for i in range(5)] == ["<s>", "cat", "#ing", "#\\n", "Paris"]


def test_added_tokens_flagged_special_are_filtered_in_sentencepiece_vocabularies():
    """Gemma's ``<unusedN>`` slots are added tokens flagged special but not in ``all_special_ids``; a
    SentencePiece ``<...>`` piece that is not flagged (``<div>``) is text."""
    pieces = ["<bos>", "▁cat", "<unused0>", "<unused1>", "<div>", "▁Paris"]
    vocab = vocabulary(_StubTokenizer(pieces, special=(0,), added={2: True, 3: True, 4: False}), len(pieces))
    kept = [vocab.display(i) for i in range(len(vocab)) if TokenFilter(only_ascii=True).keeps(vocab, i)]
    assert kept == ["cat", "#<div>", "Paris"], f"kept {kept}"


def test_filters_do_what_they_say(tmp_path):
    vocab = vocabulary(_StubTokenizer(BPE_PIECES), len(BPE_PIECES) + 1)
    kept = lambda f: [vocab.display(i) for i in range(len(vocab)) if f.keeps(vocab, i)]  # noqa: E731
    everything = kept(TokenFilter())
    assert "<s>" not in everything and "<id 12>" not in everything and "café" in everything
    assert "<s>" in kept(TokenFilter(keep_special=True))
    assert "café" not in kept(TokenFilter(only_ascii=True)) and "hello!" in kept(TokenFilter(only_ascii=True))
    alnum = kept(TokenFilter(only_alnum=True))
    assert "hello!" not in alnum and "#\\n" not in alnum and "café" in alnum and "123" in alnum
    words = tmp_path / "words.txt"
    words.write_text("Cat\nparis\n\n# comment\n")
    listed = kept(TokenFilter(word_list=read_word_list(str(words))))
    assert sorted(listed) == sorted(["cat", "#cat", "Paris", "paris"])
    mask = TokenFilter(only_ascii=True, only_alnum=True).allowed(vocab)
    assert mask.dtype == torch.bool and [vocab.display(i) for i in mask.nonzero().squeeze(1).tolist()] == [
        "cat", "#cat", "cats", "Paris", "paris", "123", "#ing"]
    with pytest.raises(WordListError, match="not found"):
        read_word_list(str(tmp_path / "missing.txt"))
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(WordListError, match="empty"):
        read_word_list(str(tmp_path / "empty.txt"))


def test_pair_exclusion_groups():
    vocab = vocabulary(_StubTokenizer(BPE_PIECES), len(BPE_PIECES))
    near = pair_groups(vocab, "near")
    assert near[1] == near[2]  # ' cat' ~ 'cat'
    assert near[4] == near[5]  # ' Paris' ~ ' paris'
    assert near[1] != near[3]  # cat vs cats
    identical = pair_groups(vocab, "identical")
    assert identical[1] != identical[2] and len(set(identical.tolist())) == len(vocab)
    assert pair_groups(vocab, "none") is None
    with pytest.raises(ValueError):
        pair_groups(vocab, "fuzzy")


def test_top_tokens_respects_the_allowed_mask():
    scores = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0])
    allowed = torch.tensor([False, True, False, True, True])
    ids, values = top_tokens(scores, 2, allowed)
    assert ids.tolist() == [1, 3] and values.tolist() == [4.0, 2.0]
    ids, _ = top_tokens(scores, 10, allowed)
    assert ids.tolist() == [1, 3, 4]


# --------------------------------------------------------------------------- weights against the modules


@pytest.mark.parametrize("kind", TINY_KINDS)
def test_output_embedding_matches_the_lm_head(plain_models, kind):
    """``h @ E`` is the LM head's output without its bias (GPT-J's head has one; E is the weight alone)."""
    model = plain_models[kind]
    states = torch.randn(5, model.config.hidden_size)
    head = model.get_output_embeddings()
    expected = project_to_vocab(model, states, apply_final_norm=False, softcap=False)
    if head.bias is not None:
        expected = expected - head.bias
    assert_close_rel(states @ embedding_matrix(model), expected, TOLERANCE, f"{kind}: h @ E vs LM head")
    e_in = embedding_matrix(model, "input")
    assert e_in.shape == embedding_matrix(model).shape
    if not model.config.tie_word_embeddings and model_parts(model).project_in is None:  # the two sides differ
        assert torch.equal(e_in, model.get_input_embeddings().weight.t())
        assert not torch.allclose(e_in, embedding_matrix(model))


def _attention_capture(model, layer, input_ids, **kwargs):
    """Input hidden states, output and probabilities of one attention module during a forward pass."""
    parts = model_parts(model).layers[layer]
    attn = parts.attention
    seen = {}

    def pre(module, args, kw):
        seen["x"] = kw["hidden_states"] if "hidden_states" in kw else args[0]

    def post(module, args, kw, output):
        seen["out"], seen["probs"] = output[0], output[1]

    def projected(module, args, output):  # the output projection alone (BLOOM's module adds the residual)
        seen["projected"] = output.clone()

    handles = [attn.register_forward_pre_hook(pre, with_kwargs=True),
               attn.register_forward_hook(post, with_kwargs=True),
               parts.attention_output.register_forward_hook(projected)]
    try:
        with torch.no_grad():
            model(input_ids=input_ids, **kwargs)
    finally:
        for h in handles:
            h.remove()
    return seen


@pytest.mark.parametrize("kind", TINY_KINDS)
def test_head_weights_reproduce_the_attention_module(kind):
    """Per-head weights reproduce the module's output and probabilities.

    Σ_h P_h (x W_V,h + b_V,h) W_O,h + b_O equals the module's output, and softmax of
    (x W_Q,h + b_Q,h)(x W_K,h + b_K,h)ᵀ/√d equals its probabilities. Everything else that shapes the
    probabilities is switched off so that the check is about the query/key slicing of fused projections:
    positions all 0 (RoPE the identity), q/k norms replaced by the identity, no softcapping, a sliding
    window longer than the input.
    """
    # no softcapping, windows, value clip or per-head q/k LayerNorm; Granite's softmax scaling set to 1/sqrt(d)
    model = build_tiny_model(kind, decomposed=False, attn_logit_softcapping=None, sliding_window=64, clip_qkv=None,
                             qk_layernorm=False, attention_multiplier=0.25)
    if not has_head_weights(model, 1):  # latent attention: no fixed per-head matrices, refused in one line
        with pytest.raises(LatentAttentionError, match="latent attention"):
            head_weights(model, 1, 0)
        return
    # ALiBi (BLOOM, Falcon-RW) adds a per-head bias by key position that no query/key weight carries, and
    # GPT-OSS's sinks take a share of every row
    alibi = bool(getattr(model.config, "alibi", False)) or model.config.model_type == "bloom"
    alibi = alibi or getattr(model_parts(model).layers[1].attention, "sinks", None) is not None
    for module in model.modules():
        for name in ("q_norm", "k_norm"):
            if isinstance(getattr(module, name, None), torch.nn.Module):
                setattr(module, name, torch.nn.Identity())
    ids = torch.randint(4, 260, (1, 7), generator=torch.Generator().manual_seed(3))
    positions = {} if model.config.model_type in ("opt", "gpt2") else {"position_ids": torch.zeros_like(ids)}
    layer = 1
    seen = _attention_capture(model, layer, ids, **positions)
    x, probs = seen["x"][0], seen["probs"][0]
    total = torch.zeros_like(seen["out"][0])
    causal = torch.ones(7, 7, dtype=torch.bool).tril()
    scaling = getattr(model.config, "query_pre_attn_scalar", None)
    for head in range(num_heads(model, layer)):
        w = head_weights(model, layer, head)
        total += probs[head] @ w.value(x) @ w.output.weight
        d = w.query.weight.shape[1]
        scores = (w.query(x) @ w.key(x).t()) / (scaling or d) ** 0.5
        expected = torch.softmax(scores.masked_fill(~causal, float("-inf")), dim=-1)
        if not alibi:
            assert_close_rel(expected, probs[head], TOLERANCE, f"{kind}: head {head} probabilities from W_Q,h/W_K,h")
    output_bias = model_parts(model).layers[layer].attention_output.bias
    if output_bias is not None:
        total = total + output_bias
    assert_close_rel(total, seen["projected"][0], TOLERANCE, f"{kind}: Σ_h P_h x W_V,h W_O,h vs the output projection")


@pytest.mark.parametrize("kind", TINY_KINDS)
def test_head_map_factors_are_the_vocab_maps(plain_models, kind):
    model = plain_models[kind]
    if not has_head_weights(model, 1):
        pytest.skip("latent attention has no fixed W_VO / W_QK (its refusal is tested with the head weights)")
    w = head_weights(model, 2, 3)
    e = embedding_matrix(model)
    left, right = head_map_factors(model, 2, 3, "vo")
    assert_close_rel(left @ right, e.t() @ w.value.weight @ w.output.weight @ e, TOLERANCE, "Eᵀ W_VO E")
    left, right = head_map_factors(model, 2, 3, "qk")
    assert_close_rel(left @ right, e.t() @ w.query.weight @ w.key.weight.t() @ e, TOLERANCE, "Eᵀ W_QK E")
    if kind in ("llama", "mistral", "qwen2"):  # GQA: 4 query heads over 2 kv heads
        assert [head_weights(model, 0, h).kv_head for h in range(4)] == [0, 0, 1, 1]


#: test-only lookup of the module whose input is the MLP's input, to check the keys independently
@pytest.mark.parametrize("kind", TINY_KINDS)
def test_ff_keys_and_values_reproduce_the_mlp(plain_models, kind):
    """Σ_i a_i value_i is the MLP output, and the keys (gate/up) reproduce the inner activation, computed from
    the family's MLP record and the real MLP input."""
    from huggingface_patch.architectures import get_adapter

    model = plain_models[kind]
    parts = model_parts(model)
    layer = parts.layers[1]
    spec = get_adapter(model).spec(model).layers[1].mlp
    if hasattr(spec, "route"):  # a mixture of experts: each expert's neurons against the experts' own module
        _check_expert_neurons(model, parts.layers[1], spec)
        return
    seen = {}
    handles = [layer.mlp.register_forward_pre_hook(lambda m, a: seen.__setitem__("x", a[0])),
               layer.mlp_down.register_forward_pre_hook(lambda m, a: seen.__setitem__("a", a[0])),
               layer.mlp_down.register_forward_hook(lambda m, a, o: seen.__setitem__("y", o.clone()))]
    with torch.no_grad():
        model(input_ids=torch.randint(4, 260, (1, 6), generator=torch.Generator().manual_seed(4)))
    for h in handles:
        h.remove()
    x, a, y = (seen[k].reshape(-1, seen[k].shape[-1]) for k in ("x", "a", "y"))
    neurons = a.shape[-1]
    vectors = [ff_vectors(model, 1, i) for i in range(neurons)]
    values = torch.stack([v["value"] for v in vectors])
    down_bias = layer.mlp_down.bias if layer.mlp_down.bias is not None else 0
    assert_close_rel(a @ values + down_bias, y, TOLERANCE, f"{kind}: Σ_i a_i value_i vs MLP output")
    if "key" in vectors[0]:
        keys = torch.stack([v["key"] for v in vectors], 1)
        bias = spec.inp.bias if spec.inp.bias is not None else 0
        assert_close_rel(spec.act(x @ keys + bias), a, TOLERANCE, f"{kind}: act(x·key_i) vs inner activation")
    else:
        gate = torch.stack([v["gate"] for v in vectors], 1)
        up = torch.stack([v["up"] for v in vectors], 1)
        gb = spec.gate.bias if spec.gate.bias is not None else 0
        ub = spec.up.bias if spec.up.bias is not None else 0
        assert_close_rel(spec.act(x @ gate + gb) * (x @ up + ub), a, TOLERANCE, f"{kind}: gated activation")


def _check_expert_neurons(model, layer, spec):
    """Each expert's gate/up/value vectors reproduce that expert, computed by the model's own experts module with
    every token routed to it alone (weight 1)."""
    x = torch.randn(5, model.config.hidden_size, generator=torch.Generator().manual_seed(4))
    experts = layer.mlp.experts
    for expert in range(spec.num_experts):
        index = torch.full((5, 1), expert, dtype=torch.long)
        with torch.no_grad():
            expected = experts(x, index, torch.ones(5, 1))
        vectors = [ff_vectors(model, 1, i, expert) for i in range(spec.gate.shape[2])]
        gate = torch.stack([v["gate"] for v in vectors], 1)
        up = torch.stack([v["up"] for v in vectors], 1)
        value = torch.stack([v["value"] for v in vectors])
        gb = 0 if spec.gate_bias is None else spec.gate_bias[expert]
        ub = 0 if spec.up_bias is None else spec.up_bias[expert]
        inner, _, _ = spec.activation(x @ gate + gb, x @ up + ub)
        db = 0 if spec.down_bias is None else spec.down_bias[expert]
        assert_close_rel(inner @ value + db, expected, TOLERANCE, f"expert {expert}: its neurons vs the module")
    with pytest.raises(ParameterIndexError, match="mixture of"):
        ff_vectors(model, 1, 0)


def test_index_errors_name_the_range(plain_models):
    model = plain_models["llama"]
    with pytest.raises(ParameterIndexError, match=r"layer 3 is out of range.*layers 0\.\.2"):
        head_weights(model, 3, 0)
    with pytest.raises(ParameterIndexError, match=r"head 4 is out of range"):
        head_weights(model, 0, 4)
    with pytest.raises(ParameterIndexError, match=r"neuron 96 is out of range"):
        ff_vectors(model, 0, 96)


# --------------------------------------------------------------------------- readouts on tiny models


@pytest.mark.parametrize("kind", TINY_KINDS)
def test_top_head_pairs_match_dense_with_filters(plain_models, byte_tokenizer, kind):
    model = plain_models[kind]
    if not has_head_weights(model, 1):
        pytest.skip("latent attention has no fixed W_VO / W_QK (its refusal is tested with the head weights)")
    vocab = vocabulary(byte_tokenizer, model.get_output_embeddings().weight.shape[0])
    token_filter = TokenFilter(only_ascii=True, only_alnum=True)
    for map_kind in ("vo", "qk"):
        result = top_head_pairs(model, vocab, 1, 1, map_kind, token_filter=token_filter, pair_exclusion="near",
                                min_k=20, max_k=200, th0=1.0, max_block_bytes=4096)
        assert 20 <= len(result.entries) <= 200
        left, right = head_map_factors(model, 1, 1, map_kind)
        dense = left @ right
        allowed = token_filter.allowed(vocab)
        groups = pair_groups(vocab, "near")
        dense[~allowed, :] = float("-inf")
        dense[:, ~allowed] = float("-inf")
        dense[groups[:, None] == groups[None, :]] = float("-inf")
        values, pairs = _dense_top(dense, len(result.entries))
        assert torch.allclose(result.entries.values, values, rtol=1e-5, atol=1e-7)
        assert set(zip(result.entries.rows.tolist(), result.entries.cols.tolist())) == pairs
        for row in result.rows(vocab):
            first, second = list(row.values())[1:3]
            assert first.lstrip("#").isalnum() and second.lstrip("#").isalnum() and first != second


@pytest.mark.parametrize("kind", ["opt-post", "gpt2", "llama"])
def test_neuron_top_tokens_are_the_projection_argmax(plain_models, kind):
    model = plain_models[kind]
    tops = neuron_top_tokens(model, 2, 7, 10)
    vectors = ff_vectors(model, 2, 7)
    assert set(tops) == set(vectors)
    for part, (ids, _values) in tops.items():
        scores = vectors[part] @ embedding_matrix(model)
        assert ids.tolist() == scores.topk(10).indices.tolist()
    bottom = neuron_top_tokens(model, 2, 7, 10, largest=False)
    for part, (ids, values) in bottom.items():
        scores = vectors[part] @ embedding_matrix(model)
        assert ids.tolist() == scores.topk(10, largest=False).indices.tolist()
        assert values.tolist() == sorted(values.tolist())


def test_alignment_recall_is_one_when_every_token_is_compared(plain_models, byte_tokenizer):
    model = plain_models["llama"]
    texts = ["The keys to the old cabinet are on the table.", "Nobody knows who left them there."]
    full = parameter_alignment(model, byte_tokenizer, texts, k_tokens=260, max_positions=20)
    assert all(r["recall"] == 1.0 and r["baseline"] == 1.0 for r in full.rows)
    some = parameter_alignment(model, byte_tokenizer, texts, layers=[0, 2], n_neurons=3, k_tokens=10,
                               max_positions=20, target="final")
    expected = {(layer, p) for layer in (0, 2) for p in ("gate", "up", "value")}
    assert {(r["layer"], r["part"]) for r in some.rows} == expected
    assert all(0 <= r["recall"] <= 1 and 0 <= r["baseline"] <= 1 and r["positions"] == 20 for r in some.rows)


def test_tsne_of_top_tokens(plain_models, byte_tokenizer):
    model = plain_models["gpt2"]
    vocab = vocabulary(byte_tokenizer, 260)
    vector = ff_vectors(model, 0, 1)["value"]
    result = tsne_top_tokens(vector, embedding_matrix(model), vocab, 25, n_components=3)
    assert result.coords.shape == (25, 3) and len(result.tokens) == 25
    assert result.scores == sorted(result.scores, reverse=True)
    page = tsne_html(result, "test <page>")
    assert "<script src" not in page and "test &lt;page&gt;" in page and json.dumps(result.tokens[0])[1:-1] in page
    flat = tsne_top_tokens(vector, embedding_matrix(model), vocab, 10, n_components=2, normalize=True)
    assert flat.coords.shape == (10, 2)


@pytest.mark.parametrize("kind", ["gpt2", "llama", "gptj"])
def test_selection_rule_matches_its_definition(kind, byte_tokenizer):
    """select_parameters: the neuron most often in a position's top 5 (counted here from the MLP's own inner
    activation) and the heads with the largest ‖W_V,h W_O,h‖ / ‖W_Q,h W_K,hᵀ‖ (dense products here)."""
    from huggingface_patch.corpus import StartToken
    from huggingface_patch.embedding_space.projections import head_weights, num_heads
    from huggingface_patch.embedding_space.selection import select_parameters
    model = build_tiny_model(kind, decomposed=False)
    tokenizer = byte_tokenizer
    texts = ["the cat sat on the mat", "a dog ran home fast, then slept"]
    start = StartToken(2, "</s>", "test")
    chosen = select_parameters(model, tokenizer, texts, layers=[0, 2], neurons=5, start=start)

    parts = model_parts(model)
    inner, seen_ids = {}, []
    handles = [layer.mlp_down.register_forward_pre_hook(
        lambda module, args, i=i: inner.__setitem__(i, args[0])) for i, layer in enumerate(parts.layers)]
    from huggingface_patch.embedding_space.projections import ff_size

    counts = {layer: torch.zeros(ff_size(model, layer), dtype=torch.long) for layer in (0, 2)}
    with torch.no_grad():
        for text in texts:
            ids = torch.tensor([[2] + tokenizer(text, add_special_tokens=False)["input_ids"]])
            seen_ids.append(ids)
            model(ids)
            for layer in counts:
                acts = inner[layer].reshape(1, ids.shape[1], -1)[0, 1:]
                counts[layer] += torch.bincount(acts.topk(5, -1).indices.flatten(), minlength=counts[layer].numel())
    for handle in handles:
        handle.remove()
    for entry in chosen["chosen"]:
        layer = entry["layer"]
        assert entry["neuron"] == int(counts[layer].argmax()), f"{kind} layer {layer}"
        assert entry["neuron_top_count"] == int(counts[layer].max())
        for part, head_key in (("vo", "vo_head"), ("qk", "qk_head")):
            norms = []
            for head in range(num_heads(model, layer)):
                left, right = getattr(head_weights(model, layer, head), part)
                norms.append(float(torch.linalg.matrix_norm(left.double() @ right.double())))
            assert entry[head_key] == max(range(len(norms)), key=norms.__getitem__), f"{kind} {part} layer {layer}"
            assert abs(entry[f"{part}_norm"] - max(norms)) <= 1e-9 * max(norms)
    assert chosen["positions"] == sum(ids.shape[1] - 1 for ids in seen_ids)


def test_alignment_uses_the_start_token(byte_tokenizer):
    """--bos reaches the texts: with a start token every text starts with it, without one it does not."""
    from huggingface_patch.corpus import StartToken
    from huggingface_patch.embedding_space.align import collect_activations

    model = build_tiny_model("llama", decomposed=False)
    tokenizer = byte_tokenizer
    firsts = []
    handle = model.register_forward_pre_hook(lambda module, args, kwargs: firsts.append(int(kwargs["input_ids"][0, 0])),
                                             with_kwargs=True)
    collect_activations(model, tokenizer, ["xyz abc"], start_token=StartToken(7, "tok", "test"))
    collect_activations(model, tokenizer, ["xyz abc"], start_token=StartToken(None, None, "none"))
    handle.remove()
    assert firsts[0] == 7 and firsts[1] == tokenizer("xyz abc", add_special_tokens=False)["input_ids"][0]
