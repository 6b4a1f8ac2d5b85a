"""The prediction file of an Avazu model: parquet, one row per scored row, in the scored file's order.

* ``row`` (int64): 0-based position of the row in the scored file (the encoded split or the raw CSV);
* ``id`` (string): the raw CSV's ``id`` column, where the file has one (Kaggle / reczoo x4);
* ``label`` (int8): the click label of the input;
* ``logit`` (float32) and ``p`` (float32, = sigmoid(logit) as torch computes it in training);
* ``p_oracle`` (float32): the generator's true click probability (synthetic data only).

The training and evaluation stages write their test splits' predictions in this format
(data/avazu/predictions/...), ``recdag avazu predict`` any file's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from pipeline.core.data import TensorData
from pipeline.ctr.schema import ORACLE


def prediction_schema(oracle: bool, ids: bool = False) -> pa.Schema:
    return pa.schema([pa.field("row", pa.int64())] + ([pa.field("id", pa.string())] if ids else [])
                     + [pa.field("label", pa.int8()), pa.field("logit", pa.float32()), pa.field("p", pa.float32())]
                     + ([pa.field(ORACLE, pa.float32())] if oracle else []))


def prediction_batch(row0: int, label: np.ndarray, logits: np.ndarray, oracle: np.ndarray | None = None,
                     ids: pa.Array | None = None) -> pa.RecordBatch:
    z = np.asarray(logits, dtype=np.float32)
    p = torch.sigmoid(torch.from_numpy(np.ascontiguousarray(z))).numpy()
    cols = [pa.array(np.arange(row0, row0 + len(z), dtype=np.int64))] + ([ids] if ids is not None else [])
    cols += [pa.array(np.asarray(label, dtype=np.int8)), pa.array(z), pa.array(p)]
    if oracle is not None:
        cols.append(pa.array(np.asarray(oracle, dtype=np.float32)))
    return pa.record_batch(cols, schema=prediction_schema(oracle is not None, ids is not None))


def write_predictions(path: Path, data: TensorData, logits: np.ndarray, batch_rows: int = 1 << 20) -> None:
    """The predictions of ``logits`` on an in-memory split (the stages' test predictions)."""
    oracle = data.oracle.numpy() if data.oracle is not None else None
    y = data.y.numpy()
    with pq.ParquetWriter(path, prediction_schema(oracle is not None), compression="zstd") as w:
        for a in range(0, max(len(y), 1), batch_rows):
            b = min(len(y), a + batch_rows)
            w.write_batch(prediction_batch(a, y[a:b], logits[a:b], None if oracle is None else oracle[a:b]))
