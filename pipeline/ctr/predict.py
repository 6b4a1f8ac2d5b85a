"""Scoring a dataset with a trained Avazu model: the CTR baseline (any zoo model) or an LLM-CTR phase.

The output is a prediction file (:mod:`pipeline.ctr.predictions`), one row per input row, in input order.
Inputs are an encoded split (int32 ids of the model's vocabulary, as avazu_vocab writes them), or a raw
CSV in one of the declared layouts (conf/avazu_layouts.yaml) that goes through the same normalize and
encode code as the pipeline, with the model's vocabulary (``vocab.parquet`` beside the feature map). Both
stream row group by row group: memory is the model plus one batch.

A vocabulary mismatch is one clear error, never a silently wrong score: the model's fields and vocabulary
sizes must equal the feature map's, the feature map's md5 must equal the one recorded at training (when
recorded), every id must be inside its field's vocabulary, and a raw CSV whose tokens are almost all unknown
to the vocabulary (:data:`MAX_OOV_SHARE`) is refused rather than scored as out-of-vocabulary rows.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import torch
from torch import nn

from pipeline.core.errors import ConfigError, DataError
from pipeline.core.io import load_weights, md5_file, parquet_reader, read_json, read_table, row_group_batches
from pipeline.ctr.predictions import prediction_batch, prediction_schema
from pipeline.ctr.schema import LABEL, ORACLE, TIME_FIELDS

log = logging.getLogger(__name__)

MAX_OOV_SHARE = 0.9      # a raw CSV with more of its categorical tokens out of the vocabulary is refused


# ------------------------------------------------------------------------------------------- the model

@dataclass
class Predictor:
    """A trained model ready to score encoded rows: ``kind`` is ``baseline`` or ``llm_phase<n>``."""

    kind: str
    model: nn.Module
    features: list[str]
    vocab_sizes: list[int]
    batch_size: int

    @torch.no_grad()
    def logits(self, x: np.ndarray) -> np.ndarray:
        """float32 click logits of int32 rows ``x`` [N, F] (in batches of ``batch_size``)."""
        device = next(self.model.parameters()).device
        out = np.empty(len(x), dtype=np.float32)
        for a in range(0, len(x), self.batch_size):
            xb = torch.from_numpy(np.ascontiguousarray(x[a:a + self.batch_size])).to(device)
            out[a:a + len(xb)] = self.model(xb).float().cpu().numpy()
        return out


def read_feature_map(path: Path) -> tuple[list[str], list[int]]:
    from pipeline.ctr.data import EncodedAvazu

    enc = EncodedAvazu(Path(path).parent, Path(path).parent)
    return enc.features, enc.vocab_sizes


def _check_md5(cfg_file: Path, cfg: dict, feature_map: Path) -> None:
    want = cfg.get("feature_map_md5")
    if want and want != md5_file(feature_map):
        raise DataError(cfg_file, f"vocabulary mismatch: the model was trained on a feature map with md5 {want}, "
                        f"{feature_map} has md5 {md5_file(feature_map)}", field="feature_map_md5",
                        expected="the feature map (and encoded data) the model was trained with")


def load_predictor(model_dir: Path, feature_map: Path, *, baseline_dir: Path, llm_dir: Path, device: str = "cpu",
                   batch_size: int = 8192) -> Predictor:
    """The model of ``model_dir``: a CTR model folder (``config.json`` with a ``model`` entry, as
    avazu_train_baseline writes it) or an LLM-CTR phase folder (``config.json`` with ``phase``), which also
    needs the baseline and the LLM it was trained with (checked by fingerprint)."""
    from pipeline.ctr.llm_init import resolve_device, resolve_dtype
    from pipeline.ctr.models import load_model_dir

    model_dir, feature_map = Path(model_dir), Path(feature_map)
    cfg_file = model_dir / "config.json"
    if not cfg_file.is_file():
        raise DataError(cfg_file, "model config missing",
                        expected="a trained model folder (models/avazu/baseline or models/avazu/llm_phase<n>)")
    cfg = read_json(cfg_file)
    if not isinstance(cfg, dict) or not ({"model", "phase"} & set(cfg)):
        raise DataError(cfg_file, "neither a CTR model's nor an LLM-CTR phase's config", field="model",
                        expected="the config.json of avazu_train_baseline or avazu_llm_phase")
    features, sizes = read_feature_map(feature_map)
    dev = resolve_device(device)
    if "model" in cfg:
        _check_md5(cfg_file, cfg, feature_map)
        model = load_model_dir(model_dir, features, sizes).to(dev)
        return Predictor("baseline", model, features, sizes, batch_size)
    from pipeline.ctr import llm as L

    if list(cfg.get("features", [])) != features:
        raise DataError(cfg_file, f"vocabulary mismatch: the phase was trained on fields {cfg.get('features')}",
                        field="features", expected=f"the feature map's fields {features}")
    for what, d, key in (("baseline", baseline_dir, "baseline_fingerprint"), ("LLM", llm_dir, "llm_fingerprint")):
        if not Path(d).is_dir():
            raise DataError(d, f"the {what} folder of this LLM-CTR phase is missing",
                            expected=f"--{'baseline' if what == 'baseline' else 'llm'} pointing at it")
        if cfg.get(key) and cfg[key] != L.dir_fingerprint(Path(d)):
            raise DataError(cfg_file, f"{d} is not the {what} this phase was trained with (fingerprints differ)",
                            field=key, expected=f"the {what} folder of the run that trained {model_dir}")
    baseline = L.load_baseline(Path(baseline_dir), features, sizes)
    _check_md5(Path(baseline_dir) / "config.json", read_json(Path(baseline_dir) / "config.json"), feature_map)
    bundle = L.load_bundle(Path(llm_dir), prompt=cfg["prompt"], answer_tokens=cfg["answer_tokens"],
                           dtype=resolve_dtype("auto", dev), device=dev)
    weights = model_dir / "model.pt"
    if not weights.is_file():
        raise DataError(weights, "LLM-CTR phase weights missing", expected="the output of avazu_llm_phase")
    state = load_weights(weights, map_location=dev)
    proj, encoder = L.split_state(state)
    baseline.model.to(dev)
    model = L.build_llm_ctr(baseline, bundle, projector_hidden=cfg["projector_hidden"], train_encoder=False,
                            prompt_cache=True, projector_state=proj, encoder_state=encoder,
                            readout=cfg.get("readout", "seed"), readout_state=L.part_state(state, "readout"),
                            projector=cfg.get("projector", "per_field"))
    return Predictor(f"llm_phase{cfg['phase']}", model.to(dev).eval(), features, sizes, batch_size)


# ------------------------------------------------------------------------------------------- scoring

def _check_ids(x: np.ndarray, pred: Predictor, src: Path, row0: int) -> None:
    sizes = np.asarray(pred.vocab_sizes)
    bad = (x < 0) | (x >= sizes[None, :])
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise DataError(src, f"vocabulary mismatch: id {int(x[i, j])} is outside the model's vocabulary of "
                        f"{int(sizes[j])} ids", row=row0 + int(i) + 1, field=pred.features[j],
                        expected="data encoded with the model's vocabulary (the feature map it was trained on)")


def predict_encoded(pred: Predictor, src: Path, dst: Path, ids=None) -> dict:
    """Score the encoded parquet ``src`` into ``dst`` (row group by row group); ``ids``, an iterator of
    string arrays aligned with the row groups' rows, adds the ``id`` column. Returns rows and AUC / logloss
    (when both classes occur)."""
    from pipeline.ctr.task import ctr_metrics

    src, dst = Path(src), Path(dst)
    try:
        pf = parquet_reader(src)
    except (pa.ArrowInvalid, OSError) as e:
        raise DataError(src, f"not a readable parquet file ({str(e).splitlines()[0]})",
                        expected="an encoded split (data/avazu/encoded/<source>/<split>.parquet)") from None
    names = pf.schema_arrow.names
    missing = [c for c in (LABEL, *pred.features) if c not in names]
    if missing:
        raise DataError(src, "missing column", field=missing[0],
                        expected=f"an encoded split with {LABEL!r} and the model's {len(pred.features)} fields")
    has_oracle = ORACLE in names
    cols = [LABEL, *pred.features] + ([ORACLE] if has_oracle else [])
    rows, ys, ps = 0, [], []
    id_buf: list = []
    with pq.ParquetWriter(dst, prediction_schema(has_oracle, ids is not None), compression="zstd") as w:
        for batch in row_group_batches(pf, columns=cols):
            n = batch.num_rows
            x = np.stack([batch.column(f).to_numpy(zero_copy_only=False) for f in pred.features], 1).astype(np.int32)
            _check_ids(x, pred, src, rows)
            z = pred.logits(x)
            y = batch.column(LABEL).to_numpy(zero_copy_only=False)
            idcol = None
            if ids is not None:
                while sum(len(a) for a in id_buf) < n:
                    id_buf.append(next(ids))
                joined = pa.concat_arrays(id_buf) if len(id_buf) > 1 else id_buf[0]
                idcol, rest = joined.slice(0, n), joined.slice(n)
                id_buf = [rest] if len(rest) else []
            w.write_batch(prediction_batch(rows, y, z, batch.column(ORACLE).to_numpy() if has_oracle else None, idcol))
            ys.append(y)
            ps.append(1.0 / (1.0 + np.exp(-z.astype(np.float64))))
            rows += n
    if rows == 0:
        raise DataError(src, "has no rows", expected="at least one row to score")
    out = {"rows": rows}
    y, p = np.concatenate(ys), np.concatenate(ps)
    if len(np.unique(y)) == 2:
        out.update(ctr_metrics(y, p))
    return out


def load_vocab(vocab_parquet: Path, features: list[str]):
    """The per-field vocabularies (:class:`~pipeline.ctr.vocab.FieldVocab`) of avazu_vocab's
    ``vocab.parquet``, in the feature map's field order."""
    import pyarrow.compute as pc

    from pipeline.ctr.vocab import FieldVocab

    if not Path(vocab_parquet).is_file():
        raise DataError(vocab_parquet, "vocabulary missing", expected="avazu_vocab's vocab.parquet beside the feature map")
    t = read_table(vocab_parquet, columns=["field", "index", "token", "count"])
    out = {}
    for f in features:
        part = t.filter(pc.equal(t["field"], f))
        part = part.take(pc.sort_indices(part["index"]))
        if part.num_rows < 2:
            raise DataError(vocab_parquet, "field has no vocabulary", field=f, expected="PAD, tokens and OOV rows")
        inner = part.slice(1, part.num_rows - 2)                     # drop the PAD and OOV rows
        out[f] = FieldVocab(inner["token"].combine_chunks(), inner["count"].combine_chunks())
    return out


def _csv_ids(csv_path: Path, block_size: int = 1 << 22):
    """The raw CSV's ``id`` column, block by block (strings)."""
    reader = pacsv.open_csv(csv_path, read_options=pacsv.ReadOptions(block_size=block_size),
                            convert_options=pacsv.ConvertOptions(include_columns=["id"],
                                                                 column_types={"id": pa.string()}))
    for b in reader:
        yield b.column(0)


def predict_raw_csv(pred: Predictor, csv_path: Path, layout, fields: tuple[str, ...], vocab_parquet: Path,
                    dst: Path, batch_rows: int) -> dict:
    """Score a raw CSV in ``layout``: normalize (the pipeline's normalize_csv), encode with the model's
    vocabulary (the pipeline's Encoder), score. The temporary files live beside ``dst`` and are removed."""
    from pipeline.ctr.normalize import normalize_csv, read_header
    from pipeline.ctr.vocab import Encoder

    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DataError(csv_path, "file not found", expected="a raw CSV to score")
    feats = [f for f in pred.features]
    if [f for f in feats if f not in TIME_FIELDS] != list(fields):
        raise ConfigError(f"{layout.name}: the layouts' fields {list(fields)} differ from the model's "
                          f"{[f for f in feats if f not in TIME_FIELDS]}")
    has_id = "id" in read_header(csv_path)
    enc = Encoder(load_vocab(vocab_parquet, feats))
    with tempfile.TemporaryDirectory(prefix=".recdag-predict-", dir=Path(dst).parent) as tmp:
        norm, coded = Path(tmp) / "normalized.parquet", Path(tmp) / "encoded.parquet"
        normalize_csv(csv_path, layout, fields, norm, batch_rows)
        stats = enc.encode_file(norm, coded, batch_rows)
        cat = [f for f in feats if f not in TIME_FIELDS]
        share = {f: stats["oov"][f] / stats["rows"] for f in cat}
        overall = sum(stats["oov"][f] for f in cat) / (stats["rows"] * len(cat))
        if overall > MAX_OOV_SHARE:
            worst = max(share, key=share.get)
            raise DataError(csv_path, f"vocabulary mismatch: {100 * overall:.1f}% of its tokens are not in the "
                            f"model's vocabulary ({worst}: {100 * share[worst]:.1f}%)", field=worst,
                            expected=f"tokens in the vocabulary's id space (layout {layout.name!r}; x1 / x2 ids "
                                     "reach it through avazu_align: score their encoded splits instead)")
        out = predict_encoded(pred, coded, dst, ids=_csv_ids(csv_path) if has_id else None)
    out["oov_share"] = {"all_fields": overall, **share}
    return out
