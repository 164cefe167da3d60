"""Parameters in embedding space (Dar, Geva, Gupta, Berant 2023, "Analyzing Transformers in Embedding Space").

Model parameters read as token-to-token maps through the embedding matrix ``E`` ``(H, V)``:

- :mod:`.projections`: ``E`` (LM head or input embedding, untied heads and OPT's projections handled),
  per-head ``W_Q,h``/``W_K,h``/``W_V,h``/``W_O,h`` (GQA-aware) and feed-forward keys/values;
- :mod:`.topk`: top entries of a vocabulary × vocabulary matrix in blocks, with the original threshold search;
- :mod:`.filters`: readable subword pieces and the token filters (ASCII, alphanumeric, word list, pairs);
- :mod:`.readout`: a neuron's top tokens, a head's top pairs of ``Eᵀ W_VO E`` / ``Eᵀ W_QK E``;
- :mod:`.tsne`: t-SNE of a vector's top tokens (PNG and self-contained HTML);
- :mod:`.align`: parameters vs hidden states recall against a random baseline.
"""

from .filters import (
                          PAIR_EXCLUSIONS,
                          TokenFilter,
                          Vocabulary,
                          WordListError,
                          pair_groups,
                          read_word_list,
                          top_tokens,
                          vocabulary,
)
from .projections import (
                          ParameterIndexError,
                          embedding_matrix,
                          ff_matrices,
                          ff_parts,
                          ff_size,
                          ff_vectors,
                          head_weights,
                          num_heads,
                          num_layers,
                          query_key_affines,
)
from .readout import HEAD_MAPS, head_map_factors, neuron_top_tokens, top_head_pairs
from .topk import TopEntries, approx_topk, blocked_topk, threshold_search

__all__ = [
    "HEAD_MAPS", "PAIR_EXCLUSIONS", "ParameterIndexError", "TokenFilter", "TopEntries", "Vocabulary", "WordListError",
    "approx_topk", "blocked_topk", "embedding_matrix", "ff_matrices", "ff_parts", "ff_size", "ff_vectors",
    "head_map_factors", "head_weights", "neuron_top_tokens", "num_heads", "num_layers", "pair_groups",
    "query_key_affines", "read_word_list", "threshold_search", "top_head_pairs", "top_tokens", "vocabulary",
]
