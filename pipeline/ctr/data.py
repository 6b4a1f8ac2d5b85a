"""The one reader of the vocab stage's output: the feature map and the int32-encoded splits as tensors."""

from __future__ import annotations

from pathlib import Path

from pipeline.core.data import TensorData
from pipeline.core.errors import ConfigError, DataError
from pipeline.core.io import read_json


class EncodedAvazu:
    """``vocab_dir/feature_map.json`` (fields, vocabulary sizes, the encoded datasets and their splits) and
    ``encoded_dir/<dataset>/<split>.parquet``. Every problem is a DataError naming the file."""

    def __init__(self, vocab_dir: Path, encoded_dir: Path) -> None:
        self.fmap_path = Path(vocab_dir) / "feature_map.json"
        self.encoded_dir = Path(encoded_dir)
        if not self.fmap_path.is_file():
            raise DataError(self.fmap_path, "feature map missing", expected="the output of avazu_vocab")
        fmap = read_json(self.fmap_path)
        try:
            self.features = [f["name"] for f in fmap["features"]]
            self.vocab_sizes = [int(f["vocab_size"]) for f in fmap["features"]]
        except (KeyError, TypeError) as e:
            raise DataError(self.fmap_path, f"malformed feature map ({e})", field="features") from None
        self.datasets: dict[str, list[str]] = dict(fmap.get("datasets", {}))

    def require(self, key: str, names: list[str], splits: tuple[str, ...]) -> None:
        """ConfigError naming ``key[i]`` when a dataset was never encoded or lacks one of ``splits``."""
        for i, s in enumerate(names):
            if s not in self.datasets:
                raise ConfigError(f"{key}[{i}]: '{s}' is not an encoded dataset ({self.fmap_path} lists "
                                  f"{sorted(self.datasets)}; the samples are named after avazu.sample.frac)")
            missing = [sp for sp in splits if sp not in self.datasets[s]]
            if missing:
                raise ConfigError(f"{key}[{i}]: '{s}' has no {missing[0]} split (it has {self.datasets[s]}"
                                  + ("; add it to avazu.split_valid.sources" if missing[0] == "valid" else "") + ")")

    def tensors(self, datasets: str | list[str], split: str) -> TensorData:
        """One split of one dataset, or of several concatenated."""
        names = [datasets] if isinstance(datasets, str) else list(datasets)
        paths = [self.encoded_dir / s / f"{split}.parquet" for s in names]
        for s, path in zip(names, paths):
            if not path.is_file():
                raise DataError(path, "encoded split missing", expected=f"{s}/{split} written by avazu_vocab")
        return TensorData.from_parquet(paths, self.features, name=f"{'+'.join(names)}/{split}")
