"""AttnLRP and CP-LRP through lxt (Achtibat et al. 2024), in a process of their own.

lxt applies its rules by patching Transformers' classes for the whole process, with no way back, so the
benchmark runs it in a child process (:func:`run_worker`) that loads the model, patches it with lxt's own
rule map for its family and returns ``input x gradient`` of the target's logit (minus the foil's, for a
contrast: LRP explains a logit) at the input embeddings (the LRP relevance in lxt's gradient x input
formulation), summed over the hidden size.

The minimal working set-up under Transformers 5 (lxt 2.1): ``pip install --no-deps lxt==2.1`` (its own
requirements would replace torch with a CUDA build and add timm, open_clip and bitsandbytes, none of which
this uses). ``import lxt.efficient`` fails because its table of models imports BERT code that Transformers 5
removed, so the worker imports the two modules it needs, ``lxt.efficient.patches`` (the rules) and the
family's ``lxt.efficient.models.<family>`` (lxt's map of which class gets which rule), without running those
package ``__init__`` files. lxt's AttnLRP attention patch replaces ``ALL_ATTENTION_FUNCTIONS`` with a plain
dict, which Transformers 5 cannot dispatch on; the worker puts the original object back (the model runs
with eager attention, whose module-level function lxt has wrapped). Families lxt maps: Llama (SmolLM2),
Qwen2, Qwen3, Gemma 3, GPT-2.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

#: lxt's family modules, by ``config.model_type``
LXT_FAMILIES = {"llama": "llama", "qwen2": "qwen2", "qwen3": "qwen3", "gemma3_text": "gemma3", "gpt2": "gpt2"}


def run_worker(kind: str, model_path: str, model_kwargs: dict, items, dtype: str
               ) -> tuple[list[np.ndarray], float, dict]:
    """Scores of ``kind`` (``attnlrp`` / ``cp-lrp``) for ``items``, computed in a child process, the seconds
    the child spent on them (its start-up and model loading left out: the other methods' cost leaves the
    loading out too), and per item (lists) ``relevance_sum``, the relevance of every input position (the
    start token's included), and ``explained``, the logit (difference) it explains: LRP's conservation
    says the two are equal."""
    from ..errors import InputError

    with tempfile.TemporaryDirectory() as folder:
        request = os.path.join(folder, "request.json")
        answer = os.path.join(folder, "answer.json")
        with open(request, "w", encoding="utf-8") as handle:
            json.dump({"kind": kind, "model": model_path, "model_kwargs": model_kwargs, "dtype": dtype,
                       "items": [{"ids": i.ids, "answer": i.answer, "foil": i.foil, "first": i.first_source}
                                 for i in items]}, handle)
        done = subprocess.run([sys.executable, "-m", "huggingface_patch.faithfulness.lrp_worker", request, answer],
                              capture_output=True, text=True)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no message"])[-1]
            raise InputError(f"{kind} (lxt) failed in its own process: {last}")
        with open(answer, encoding="utf-8") as handle:
            answer = json.load(handle)
        conservation = {"relevance_sum": answer["relevance_sum"], "explained": answer["explained"]}
        return [np.asarray(row, dtype=np.float64) for row in answer["scores"]], float(answer["seconds"]), conservation


def _lxt_modules(family: str):
    """``(patches, family map module)`` of lxt without its package ``__init__`` files (see the module)."""
    import importlib
    import types

    import lxt

    base = os.path.join(os.path.dirname(lxt.__file__), "efficient")
    for name, path in (("lxt.efficient", base), ("lxt.efficient.models", os.path.join(base, "models"))):
        if name not in sys.modules:
            module = types.ModuleType(name)
            module.__path__ = [path]
            sys.modules[name] = module
    return importlib.import_module("lxt.efficient.patches"), importlib.import_module(f"lxt.efficient.models.{family}")


def _patch(model_type: str, kind: str) -> None:
    import importlib

    family = LXT_FAMILIES.get(model_type)
    if family is None:
        raise SystemExit(f"lxt has no rule map for {model_type!r} (it maps {', '.join(LXT_FAMILIES)})")
    _, mapping = _lxt_modules(family)
    patch_map = mapping.attnLRP if kind == "attnlrp" else mapping.cp_LRP
    modeling = importlib.import_module(f"transformers.models.{family}.modeling_{family}")
    interface = modeling.ALL_ATTENTION_FUNCTIONS
    for target, patch in patch_map.items():
        patch(target)
    modeling.ALL_ATTENTION_FUNCTIONS = interface  # see the module docstring


def main(argv: list[str]) -> int:
    """The child process: ``argv`` = the request file and the answer file (JSON)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    request_path, answer_path = argv
    with open(request_path, encoding="utf-8") as handle:
        request = json.load(handle)
    config = AutoConfig.from_pretrained(request["model"], **request["model_kwargs"])
    _patch(config.model_type, request["kind"])
    dtype = getattr(torch, request["dtype"].replace("torch.", ""))
    model = AutoModelForCausalLM.from_pretrained(request["model"], dtype=dtype, attn_implementation="eager",
                                                 **request["model_kwargs"]).eval()
    embed = model.get_input_embeddings()
    scores, totals, explained, start = [], [], [], time.perf_counter()
    for item in request["items"]:
        ids = torch.tensor([item["ids"]])
        embeddings = embed(ids).detach().requires_grad_(True)
        logits = model(inputs_embeds=embeddings, use_cache=False, logits_to_keep=1).logits[0, -1]
        # LRP's recipe: the relevance of the target's logit (its difference from the foil's, for a contrast)
        value = logits[item["answer"]] - (0 if item["foil"] is None else logits[item["foil"]])
        value.backward()
        relevance = (embeddings * embeddings.grad).sum(-1)[0].double()
        scores.append(relevance[item["first"]:].tolist())  # the sources first .. t
        totals.append(float(relevance.sum()))
        explained.append(float(value.detach()))
    seconds = time.perf_counter() - start
    with open(answer_path, "w", encoding="utf-8") as handle:
        json.dump({"scores": scores, "seconds": seconds, "relevance_sum": totals, "explained": explained}, handle)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
