"""LLM-CTR bad input: each class gets one clear error (exit code 2 from the CLI) and leaves no output."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import yaml

from pipeline.core.params import load_stage
from pipeline.ctr.params import LlmCtrParams, LlmParams, LlmPhase2Params, LlmTrainParams
from pipeline.core.errors import ConfigError, DataError
from pipeline.ctr import llm as L
from pipeline.ctr import llm_init as li
from pipeline.ctr.data import EncodedAvazu
from pipeline.ctr.models import build_model
from tests.conftest import ROOT, leftovers, run_cli, set_params
from tests.test_llm_model import make_llm

FIELDS = ["C1", "banner_pos", "site_id", "hour_of_day"]
SIZES = [5, 4, 30, 26]


@pytest.fixture(scope="module")
def tiny_llm(tmp_path_factory):
    d = tmp_path_factory.mktemp("llm")
    make_llm(d, prompt=yaml.safe_load((ROOT / "params.yaml").read_text())["llm"]["prompt"])
    return d


def write_project(root, tiny_llm, *, baseline_sizes=SIZES, encoder="gated", llm=True):
    """feature_map.json, a saved baseline and models/avazu/llm: everything the LLM stages read before any data."""
    vocab = root / "data/avazu/vocab"
    vocab.mkdir(parents=True)
    (vocab / "feature_map.json").write_text(json.dumps({
        "features": [{"name": f, "vocab_size": v} for f, v in zip(FIELDS, SIZES)],
        "datasets": {"x1_sample20": ["train", "valid"], "x2_sample20": ["train", "valid"],
                     "x1": ["test", "train", "valid"], "x2": ["test", "train", "valid"],
                     "x4": ["test", "train", "valid"]}}))
    base = root / "models/avazu/baseline"
    base.mkdir(parents=True)
    m = build_model("deepfm", baseline_sizes, embedding_dim=4, hidden_units=[4], encoder=encoder)
    torch.save(m.state_dict(), base / "model.pt")
    (base / "config.json").write_text(json.dumps({"model": m.config, "features": FIELDS}))
    if llm:
        shutil.copytree(tiny_llm, root / "models/avazu/llm")


def fails(capsys, *args, match: str) -> str:
    code = run_cli(*args)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [ln for ln in err.replace("\r", "\n").splitlines() if ln.strip() and "Loading weights" not in ln]
    assert len(lines) == 1, err                               # one clear line, no traceback
    assert lines[0].startswith("error: ") and match in lines[0], err
    return lines[0]


def no_outputs(root):
    assert not (root / "models/avazu/llm_phase1").exists() and not (root / "models/avazu/llm_phase2").exists()
    assert not (root / "reports/avazu/llm_phase1.json").exists()
    assert not (root / "reports/avazu/evaluation.json").exists()
    assert leftovers(root) == []


def test_missing_llm_directory(project, tiny_llm, capsys):
    write_project(project, tiny_llm, llm=False)
    fails(capsys, "avazu", "llm-phase", "1", match="models/avazu/llm: LLM directory not found")
    fails(capsys, "avazu", "evaluate-x4", match="models/avazu/llm: LLM directory not found")
    no_outputs(project)


def test_unsupported_llm_directory(project, tiny_llm, capsys):
    write_project(project, tiny_llm)
    cfg = project / "models/avazu/llm/config.json"
    data = json.loads(cfg.read_text())
    cfg.write_text(json.dumps({**data, "model_type": "not_a_model"}))
    fails(capsys, "avazu", "llm-phase", "1", match="field 'model_type': unsupported model_type 'not_a_model'")
    cfg.unlink()
    fails(capsys, "avazu", "llm-phase", "1", match="no config.json")
    cfg.write_text(json.dumps(data))
    for w in (project / "models/avazu/llm").glob("*.safetensors"):
        w.unlink()
    fails(capsys, "avazu", "llm-phase", "1", match="no weights")
    no_outputs(project)


def test_local_source_without_a_model(project, capsys):
    set_params(project, **{"llm.source": "local", "llm.local_path": str(project / "nowhere")})
    fails(capsys, "avazu", "llm-init", match="nowhere: LLM directory not found")
    assert not (project / "models/avazu/llm").exists() and leftovers(project) == []


def test_tokenizer_without_the_answer_tokens(project, tiny_llm, capsys):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    write_project(project, tiny_llm)
    d = project / "models/avazu/llm"
    for f in ("tokenizer.json", "tokenizer_config.json"):
        (d / f).unlink()
    words = ["<unk>", "<|endoftext|>", "Predict", "click", "0", "yes"]         # no "1"
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<|endoftext|>").save_pretrained(d)
    err = fails(capsys, "avazu", "llm-phase", "1", match="field 'llm.answer_tokens[1]': answer token '1' is not one token")
    assert "<unk>" in err
    no_outputs(project)


def test_answer_word_that_is_several_tokens(project, tiny_llm, capsys):
    write_project(project, tiny_llm)
    set_params(project, **{"llm.answer_tokens": ["0", "definitely"]})
    fails(capsys, "avazu", "llm-phase", "1", match="answer token 'definitely' is not one token")
    no_outputs(project)


def test_baseline_that_does_not_match_the_vocabulary(project, tiny_llm, capsys):
    write_project(project, tiny_llm, baseline_sizes=[5, 4, 31, 26])
    fails(capsys, "avazu", "llm-phase", "1",
          match="models/avazu/baseline/config.json, field 'vocab_sizes': the baseline checkpoint does not match the "
                "vocabulary (site_id: 31 vs 30")
    fails(capsys, "avazu", "evaluate-x4", match="does not match the vocabulary")
    no_outputs(project)


def test_baseline_with_other_fields_or_weights(project, tiny_llm, capsys):
    write_project(project, tiny_llm, baseline_sizes=[5, 4, 30])
    fails(capsys, "avazu", "llm-phase", "1", match="(3 fields vs 4")
    shutil.rmtree(project / "models/avazu/baseline")
    shutil.rmtree(project / "data")
    shutil.rmtree(project / "models/avazu/llm")
    write_project(project, tiny_llm)
    torch.save({"nonsense": torch.zeros(1)}, project / "models/avazu/baseline/model.pt")
    fails(capsys, "avazu", "llm-phase", "1", match="models/avazu/baseline/model.pt: cannot rebuild the baseline")
    (project / "models/avazu/baseline/model.pt").unlink()
    fails(capsys, "avazu", "llm-phase", "1", match="baseline file missing")
    no_outputs(project)


def test_baseline_without_the_gated_encoder(project, tiny_llm, capsys):
    write_project(project, tiny_llm, encoder="none")
    fails(capsys, "avazu", "llm-phase", "1", match="ctr.model / ctr.deepfm.encoder")


def test_train_source_that_was_never_encoded(project, tiny_llm, capsys):
    write_project(project, tiny_llm)
    set_params(project, **{"llm_train.sources": ["x1_sample10"]})
    fails(capsys, "avazu", "llm-phase", "1", match="llm_train.sources[0]: 'x1_sample10' is not an encoded dataset")
    set_params(project, **{"llm_eval.sources": ["x3"]})
    fails(capsys, "avazu", "evaluate-x4", match="llm_eval.sources: 'x3' is not one of")


def test_phase2_without_phase1(project, tiny_llm, capsys):
    write_project(project, tiny_llm)
    fails(capsys, "avazu", "llm-phase", "2", match="models/avazu/llm_phase1/model.pt: phase 1 output missing")


@pytest.mark.parametrize("key,value,match", [
    ("llm.tiny.num_kv_heads", 3, "llm.tiny.num_kv_heads: 3 must divide"),
    ("llm.answer_tokens", ["1"], "llm.answer_tokens: expected two words"),
    ("llm.answer_tokens", ["1", "1"], "llm.answer_tokens: the two answers are the same"),
    ("llm.source", "local", "llm.local_path: must be set"),
    ("llm_ctr.dtype", "float16", "llm_ctr.dtype: 'float16' is not one of"),
    ("llm_train.sources", [], "llm_train.sources: must name at least one"),
    ("llm_train.batch_size", 0, "llm_train.batch_size: 0 is out of range"),
    ("llm_phase2.lr", 0.0, "llm_phase2.lr: 0.0 is out of range"),
    ("llm_ctr.prompt_cache", "yes", "llm_ctr.prompt_cache: expected true/false"),
    ("llm.bogus", 1, "llm.bogus: unknown key"),
])
def test_llm_params_are_checked(key, value, match):
    with pytest.raises(ConfigError, match=match.replace("[", r"\[").replace("(", r"\(")):
        load_stage(ROOT / "params.yaml", (key.split(".")[0],),
                   (LlmParams, LlmCtrParams, LlmTrainParams, LlmPhase2Params), overrides={key: value})


def test_library_errors_name_the_directory(tmp_path):
    with pytest.raises(DataError, match="LLM directory not found"):
        li.check_llm_dir(tmp_path / "missing")
    with pytest.raises(DataError, match="feature map missing"):
        EncodedAvazu(tmp_path, tmp_path)
