"""What each paper says, as the report may quote it: only what the papers' abstracts, introductions and
official code confirm (primary), secondary readings labelled with their source, and no number that only the
paper body gives (that body was not read). The source of every line is the project's ``PAPERS.md`` (the
reading of the four papers and their official repositories); its tags are kept: ``abstract`` (the paper's own
abstract or introduction), ``code`` (the official repository), ``secondary: WHO``."""

from __future__ import annotations

REFERENCES = {
    "geva": "Geva, Bastings, Filippova, Globerson 2023, *Dissecting Recall of Factual Associations in "
            "Auto-Regressive Language Models* (EMNLP 2023); official code: the notebook in "
            "google-research/dissecting_factual_predictions (GPT-2 XL)",
    "lioubashevski": "Lioubashevski, Schlank, Stanovsky, Goldstein, *Looking Beyond the Top-1: Transformers "
                     "Determine Top Tokens in Order* (arXiv 2410.20210; ICML 2025); official code: "
                     "daria-lioubashevski/beyond_top1 (GPT-2 XL, ViT, Whisper)",
    "oh": "Oh & Schuler 2023, *Token-wise Decomposition of Autoregressive Language Model Hidden States for "
          "Analyzing Model Predictions* (ACL 2023); official code: byungdoh/llm_decomposition (OPT models)",
    "dar": "Dar, Geva, Gupta, Berant 2023, *Analyzing Transformers in Embedding Space* (ACL 2023); official "
           "code: guyd1995/embedding-space (notebooks; GPT-2 sizes and MultiBERTs)",
}

#: per finding: the paper's claim in words (tagged), and what a like-for-like comparison would need
CLAIMS = {
    "knockout": ("Paper (abstract): cutting the attention edges into the prediction position shows two critical "
                 "points, information from the relation tokens first and from the subject tokens later. The "
                 "size of the drops and their layer ranges are in figures not read here; a secondary source "
                 "(third-party notes) reads the last→subject drop as up to about 60% in the middle-upper "
                 "layers of GPT-2 XL."),
    "extraction": ("Paper (abstract): the attribute is usually extracted by attention (MHSA) heads. The shares "
                   "of facts with an MHSA or MLP extraction event are not quoted (not read)."),
    "attributes_rate": ("Paper (abstract): the last-subject representation is enriched with many "
                        "subject-related attributes. A secondary source (a blog review) reads the peak rate at "
                        "the last subject position as nearly 50% for GPT-2 XL with Wikipedia paragraphs; the "
                        "rates at other positions are not read."),
    "sublayer": ("Paper (abstract): the enrichment is driven mainly by early MLP sublayers. The sizes of the "
                 "MLP and MHSA knockout effects are not read. In the official code the MHSA knockout writes the "
                 "dtype minimum into every mask cell, which under eager attention gives uniform attention over "
                 "the prefix, not zero attention; both variants are run here."),
    "patching": ("Official code: block l's input at the subject (non-subject, last) positions is replaced by "
                 "the same prompt's earlier hidden state (source layers 0, 1, 5, 10, 20 of 48), and MHSA "
                 "extraction is measured. The effect size is not read; a secondary note says \"by up to 50%\" "
                 "but misdescribes the patch as coming from a corrupted run."),
    "ordering": ("Paper (abstract): the top-k tokens saturate in rank order, in decoder-only language models "
                 "among others. The per-model τ and p are not read; an ICML reviewer's reading suggests τ ≈ 0.2 "
                 "(about 60% of pairs in order; secondary, paperhub.cn). The official code's test shuffles the "
                 "saturation layers of the positions its filter kept (s₁ ≤ ⌊0.85 L⌋), 1,000 times."),
    "untrained": ("Paper (abstract): the ordering holds even in untrained Transformers (official code: a "
                  "randomly initialised GPT-2 XL through the same pipeline). Untrained numbers are not read."),
    "probe": ("Paper (abstract): the current task (which rank is being fixed) can be decoded from the hidden "
              "states. Official code: StandardScaler + logistic regression, balanced accuracy over 5 folds, a "
              "Gaussian control with each class's scalar mean and sd. Accuracies are not read."),
    "early_exit": ("Paper (abstract): a token-level early-exit rule built on the probe beats existing methods "
                   "on the accuracy–efficiency trade-off (official code: softmax-margin and cosine baselines). "
                   "The accuracies are not read."),
    "rank2": ("Paper (ICML abstract): saturation events can improve language modelling. Official code: among "
              "positions where the top-1 is wrong, how often the final rank-2 token is right when s₂ = L−1 vs "
              "s₂ ≤ L−7, two-proportion z-test. The numbers are not read."),
    "deltalp": ("Paper (abstract): the most important context words are explained first by collocational "
                "association, then by syntactic dependencies and coreference; repetition of the same token "
                "matters. No previous-token share or ablation correlation is quoted (the body was not read). "
                "Official code: ΔLP in bits, argmax excluding the start token, distance 1 = the previous token."),
    "embedding": ("Paper (abstract): every parameter group can be read in embedding space without a forward "
                  "pass; official notebook: recall@50 of the 5 most active units' projections against the hidden "
                  "state's top tokens, against units taken from randomly permuted positions. The direction is "
                  "primary (aligned recall above the permuted baseline); no values are quoted (not read)."),
}
