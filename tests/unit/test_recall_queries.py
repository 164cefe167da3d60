"""Fact loading, subject-span location for several tokenizer styles, and the "known facts" filter."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import RECALL_PROMPTS, subject_span_text

from huggingface_patch.recall.queries import (
    DEFAULT_FACTS,
    FactQuery,
    FactsError,
    _greedy_tokens,
    build_queries,
    encode_prompt,
    find_subject,
    known_queries,
    length_batches,
    load_facts,
    prepare_queries,
    sample_queries,
    subject_token_span,
)
from huggingface_patch.testing import TINY_KINDS, build_tiny_model, tokenizer_folder

PROMPTS, _span_text = RECALL_PROMPTS, subject_span_text


@pytest.fixture(scope="module")
def byte_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tokenizer_folder())


def _trained_tokenizer(style: str):
    """A small BPE trained in code: 'bytelevel' (GPT-2 style, leading space merged into 'Ġword') or
    'metaspace' (SentencePiece/Llama style '▁word')."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    if style == "bytelevel":
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    else:
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
        tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
        alphabet = []
    corpus = [p for _, p in PROMPTS] * 20 + ["the continent of Europe is located in the north"] * 5
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>"],
                                                        initial_alphabet=alphabet))
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>")


@pytest.mark.parametrize("subject,prompt", PROMPTS)
def test_subject_span_byte_level_separate_space_tokens(byte_tokenizer, subject, prompt):
    ids, (start, end), text = _span_text(byte_tokenizer, prompt, subject)
    assert text == subject
    assert ids[0] != byte_tokenizer.bos_token_id  # no BOS by default, as in the paper


@pytest.mark.parametrize("style", ["bytelevel", "metaspace"])
@pytest.mark.parametrize("subject,prompt", PROMPTS)
def test_subject_span_merged_space_tokenizers(style, subject, prompt):
    tokenizer = _trained_tokenizer(style)
    ids, (start, end), text = _span_text(tokenizer, prompt, subject)
    assert text.strip() == subject
    # the tokens just outside the span are not part of the subject
    if start > 0:
        assert subject not in tokenizer.decode(ids[start - 1 : end - 1]).strip() or end - start == 1
    assert end <= len(ids)


def test_subject_span_with_bos_shifts_by_one(byte_tokenizer):
    prompt, subject = PROMPTS[1][1], PROMPTS[1][0]
    ids, offsets = encode_prompt(byte_tokenizer, prompt, byte_tokenizer.bos_token_id)
    start, end = subject_token_span(offsets, *find_subject(prompt, subject))
    plain, plain_offsets = encode_prompt(byte_tokenizer, prompt)
    assert ids[0] == byte_tokenizer.bos_token_id and ids[1:] == plain
    assert (start - 1, end - 1) == subject_token_span(plain_offsets, *find_subject(prompt, subject))


def test_offsets_fallback_by_decoding(byte_tokenizer):
    class NoOffsets:
        def __init__(self, inner):
            self.inner = inner
            self.bos_token_id = inner.bos_token_id

        def __call__(self, text, **kwargs):
            if kwargs.get("return_offsets_mapping"):
                raise NotImplementedError("no offsets")
            return self.inner(text, **kwargs)

        def decode(self, ids, **kwargs):
            return self.inner.decode(ids, **kwargs)

    for subject, prompt in PROMPTS:
        ids, (start, end), text = _span_text(NoOffsets(byte_tokenizer), prompt, subject)
        assert byte_tokenizer.decode(ids[start:end]) == subject


def test_find_subject_case_insensitive_and_missing():
    assert find_subject("the iron man is", "Iron Man") == (4, 12)
    with pytest.raises(ValueError):
        find_subject("nothing here", "Iron Man")


def test_shipped_facts_load():
    facts = load_facts(DEFAULT_FACTS)
    assert len(facts) == 1209
    assert all(f["subject"] in f["prompt"] or f["subject"].lower() in f["prompt"].lower() for f in facts[:50])


@pytest.mark.parametrize("content,match", [
    ("{not json", "malformed JSON"),
    ("{}", "non-empty JSON list"),
    ("[]", "non-empty JSON list"),
    ('[{"prompt": "x"}]', "subject"),
    ('[{"subject": "x"}]', "prompt"),
])
def test_bad_facts_files(tmp_path, content, match):
    path = tmp_path / "facts.json"
    path.write_text(content)
    with pytest.raises(FactsError, match=match):
        load_facts(str(path))


def test_missing_facts_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_facts(str(tmp_path / "missing.json"))


def test_template_is_filled(tmp_path):
    path = tmp_path / "facts.json"
    path.write_text(json.dumps([{"subject": "Nokia", "template": "{} is based in", "attribute": "Finland"}]))
    assert load_facts(str(path))[0]["prompt"] == "Nokia is based in"


def test_length_batches_group_same_lengths(byte_tokenizer):
    facts = [{"subject": s, "prompt": p, "attribute": ""} for s, p in PROMPTS] * 3
    queries = build_queries(byte_tokenizer, facts)
    batches = list(length_batches(queries, 2))
    assert sum(len(b) for b in batches) == len(queries)
    assert all(len({q.length for q in b}) == 1 and len(b) <= 2 for b in batches)


@pytest.fixture(scope="module")
def tiny_llama():
    return build_tiny_model("llama", decomposed=False)


def test_filters_keep_what_the_model_completes(byte_tokenizer, tiny_llama):
    base = [{"subject": s, "prompt": p, "attribute": "zzzz-never"} for s, p in PROMPTS]
    everything = prepare_queries(tiny_llama, byte_tokenizer, base, filter="none")
    assert [q.index for q in everything] == [0, 1, 2, 3]
    for q in everything:
        with torch.no_grad():
            logits = tiny_llama(input_ids=torch.tensor([q.input_ids])).logits[0, -1]
        assert q.target_id == int(logits.argmax())
    assert prepare_queries(tiny_llama, byte_tokenizer, base, filter="greedy") == []
    assert prepare_queries(tiny_llama, byte_tokenizer, base, filter="first-token") == []
    # make one fact's attribute start with the model's own top-1 token: it is then "known"
    chosen = next((q for q in everything if q.target_token.strip()), None)
    if chosen is None:
        pytest.skip("every top-1 token is whitespace")
    known = [dict(f) for f in base]
    known[chosen.index]["attribute"] = chosen.target_token.strip()
    for mode in ("greedy", "first-token"):
        kept = prepare_queries(tiny_llama, byte_tokenizer, known, filter=mode)
        assert [q.index for q in kept] == [chosen.index], mode
        assert isinstance(kept[0], FactQuery)


def test_a_sample_is_random_seeded_and_in_order(byte_tokenizer, tiny_llama):
    facts = [{"subject": s, "prompt": p, "attribute": "x"} for s, p in PROMPTS] * 3
    kept = prepare_queries(tiny_llama, byte_tokenizer, facts, filter="none")
    first = sample_queries(kept, 5, seed=0)
    assert len(first) == 5 and [q.index for q in first] == sorted(q.index for q in first)
    assert [q.index for q in first] != [0, 1, 2, 3, 4]  # not the first five in file order
    assert [q.index for q in sample_queries(kept, 5, seed=0)] == [q.index for q in first]
    assert [q.index for q in sample_queries(kept, 5, seed=1)] != [q.index for q in first]
    assert sample_queries(kept, None) == kept and sample_queries(kept, 10_000) == kept


@pytest.mark.parametrize("family", list(TINY_KINDS))
def test_greedy_continuation_with_cache_equals_full_recomputation(byte_tokenizer, family):
    """The filter continues each batch with a key/value cache; the tokens are those of recomputing the whole
    prefix at every step (the definition of a greedy continuation)."""
    model = build_tiny_model(family, decomposed=False)
    queries = build_queries(byte_tokenizer, [{"subject": s, "prompt": p, "attribute": "x"} for s, p in PROMPTS])
    for batch in length_batches(queries, 8):
        ids = torch.tensor([q.input_ids for q in batch])
        with torch.no_grad():
            current = ids
            for _ in range(6):
                nxt = model(input_ids=current, use_cache=False).logits[:, -1].argmax(-1)
                current = torch.cat([current, nxt[:, None]], dim=1)
        ours = _greedy_tokens(model, ids, current[:, ids.shape[1]], 6)
        assert torch.equal(ours, current[:, ids.shape[1]:]), (ours, current[:, ids.shape[1]:])


def test_known_facts_are_cached_by_what_they_depend_on(byte_tokenizer, tiny_llama, tmp_path):
    facts = [{"subject": s, "prompt": p, "attribute": "x"} for s, p in PROMPTS] * 2
    reference = prepare_queries(tiny_llama, byte_tokenizer, facts, filter="none")
    first, how = known_queries(tiny_llama, byte_tokenizer, facts, "sha-a", filter="none", cache_dir=str(tmp_path))
    assert how == "computed" and len(list(tmp_path.iterdir())) == 1
    again, how = known_queries(tiny_llama, byte_tokenizer, facts, "sha-a", filter="none", cache_dir=str(tmp_path))
    assert how == "cached"
    for ours in (first, again):
        assert [(q.index, q.target_id, q.target_token, q.target_prob) for q in ours] == \
            [(q.index, q.target_id, q.target_token, q.target_prob) for q in reference]
    # other facts content, another filter, other weights, another config or dtype miss the cache
    _, how = known_queries(tiny_llama, byte_tokenizer, facts, "sha-b", filter="none", cache_dir=str(tmp_path))
    assert how == "computed"
    _, how = known_queries(tiny_llama, byte_tokenizer, facts, "sha-a", filter="greedy", cache_dir=str(tmp_path))
    assert how == "computed"
    other = build_tiny_model("llama", decomposed=False, seed=1)
    _, how = known_queries(other, byte_tokenizer, facts, "sha-a", filter="none", cache_dir=str(tmp_path))
    assert how == "computed"
    import copy

    config = copy.deepcopy(tiny_llama.config)
    config.rms_norm_eps = 0.5  # same weights, another model: its own answers, not the cached ones
    same_weights = type(tiny_llama)(config).eval()
    same_weights.load_state_dict(tiny_llama.state_dict())
    answers, how = known_queries(same_weights, byte_tokenizer, facts, "sha-a", filter="none", cache_dir=str(tmp_path))
    assert how == "computed"
    assert [q.target_id for q in answers] == [q.target_id for q in prepare_queries(same_weights, byte_tokenizer, facts,
                                                                                    filter="none")]
    _, how = known_queries(copy.deepcopy(tiny_llama).double(), byte_tokenizer, facts, "sha-a", filter="none",
                           cache_dir=str(tmp_path))
    assert how == "computed"
    # a damaged cache file is computed again
    for path in tmp_path.iterdir():
        path.write_text("{not json")
    _, how = known_queries(tiny_llama, byte_tokenizer, facts, "sha-a", filter="none", cache_dir=str(tmp_path))
    assert how == "computed"


def test_position_sets():
    q = FactQuery(0, "s", "p", "a", list(range(8)), (2, 5))
    assert q.positions("subject") == [2, 3, 4]
    assert q.positions("non-subject") == [0, 1, 5, 6]
    assert q.positions("last") == [7]
    assert q.positions("subject-last") == [4] and q.positions("after-subject") == [5]


def test_a_start_token_belongs_to_no_position_set(byte_tokenizer):
    """With a start token the named sets are about the prompt: 'first' is its first token, and 'non-subject'
    leaves the start token out (knocking out attention to an attention sink is another experiment)."""
    from huggingface_patch.corpus import StartToken

    facts = [{"subject": PROMPTS[1][0], "prompt": PROMPTS[1][1], "attribute": ""}]
    plain = build_queries(byte_tokenizer, facts)[0]
    started = build_queries(byte_tokenizer, facts, start=StartToken(2, "</s>", "test"))[0]
    assert started.input_ids == [2] + plain.input_ids and started.offset == 1 and plain.offset == 0
    for name in ("subject", "non-subject", "last", "first", "subject-first", "subject-last", "after-subject"):
        assert started.positions(name) == [p + 1 for p in plain.positions(name)], name
    assert 0 not in started.positions("non-subject")
