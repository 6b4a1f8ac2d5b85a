"""The unified Avazu schema and the declared per-source layouts (conf/avazu_layouts.yaml)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import yaml

from pipeline.core.errors import ConfigError, DataError

TIME_FIELDS = ("hour_of_day", "weekday", "is_weekend")
LABEL = "label"
ORACLE = "p_oracle"
KAGGLE_COLUMNS = ("id", "click", "hour", "C1", "banner_pos", "site_id", "site_domain", "site_category",
                  "app_id", "app_domain", "app_category", "device_id", "device_ip", "device_model",
                  "device_type", "device_conn_type", "C14", "C15", "C16", "C17", "C18", "C19", "C20", "C21")


@dataclass(frozen=True)
class TimeSpec:
    kind: str                     # datetime | hour_id | encoded_ids
    column: str | None = None     # datetime, hour_id
    format: str = "auto"          # datetime: auto | yymmddhh | yyddhh
    yyddhh_month: int = 10        # datetime: month assumed for 6-digit YYDDHH values
    base: int = 0                 # hour_id: id of hour 0
    hour: str | None = None       # encoded_ids: column names and bases
    hour_base: int = 0
    mday: str | None = None
    mday_base: int = 0
    first_day: str = "2014-10-21"
    num_days: int = 10
    wday: str | None = None
    wday_base: int = 0
    window_start: str | None = None   # datetime: first and last day (ISO dates, inclusive) of the data's
    window_end: str | None = None     # declared date window; an hour outside it: avazu.out_of_window

    @property
    def columns(self) -> list[str]:
        if self.kind == "encoded_ids":
            return [self.hour, self.mday, self.wday]
        return [self.column]

    @property
    def first_date(self) -> dt.date:
        return dt.date.fromisoformat(self.first_day)

    @property
    def window(self) -> tuple[dt.date, dt.date] | None:
        """(first, last) day of the declared date window, inclusive; None when none is declared."""
        if self.window_start is None:
            return None
        return dt.date.fromisoformat(self.window_start), dt.date.fromisoformat(self.window_end)

    @property
    def window_text(self) -> str:
        return f"{self.window_start}..{self.window_end}"


@dataclass(frozen=True)
class Layout:
    name: str
    splits: tuple[str, ...]
    label: str
    drop: tuple[str, ...]
    namespace: str
    columns: dict[str, str]       # file column -> unified field
    time: TimeSpec
    alternative_time: TimeSpec | None = None
    oov_min_count: int | None = None
    oov_id: int | None = None        # the id that replaced the values seen < oov_min_count times

    @property
    def rare_token(self) -> str | None:
        """The normalized token of the merged rare bucket (x2: \"x2:0\"), None without one."""
        return None if self.oov_id is None else f"{self.namespace}{self.oov_id}"

    def expected_columns(self, time: TimeSpec | None = None) -> list[str]:
        time = time or self.time
        return [self.label, *self.columns, *time.columns, *self.drop]


@dataclass(frozen=True)
class Layouts:
    fields: tuple[str, ...]
    layouts: dict[str, Layout]

    @property
    def feature_fields(self) -> tuple[str, ...]:
        """All feature fields of the unified schema, in order."""
        return (*self.fields, *TIME_FIELDS)

    def __getitem__(self, source: str) -> Layout:
        try:
            return self.layouts[source]
        except KeyError:
            raise ConfigError(f"no layout declared for source '{source}' "
                              f"(declared: {', '.join(self.layouts)})") from None


_TIME_KEYS = set(TimeSpec.__dataclass_fields__)
_LAYOUT_KEYS = {"splits", "label", "drop", "namespace", "columns", "time", "alternative_time", "oov_min_count", "oov_id"}


def _time(spec: dict, where: str) -> TimeSpec:
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: expected a mapping")
    unknown = set(spec) - _TIME_KEYS
    if unknown:
        raise ConfigError(f"{where}.{sorted(unknown)[0]}: unknown key")
    t = TimeSpec(**spec)
    if t.kind not in ("datetime", "hour_id", "encoded_ids"):
        raise ConfigError(f"{where}.kind: '{t.kind}' is not one of datetime, hour_id, encoded_ids")
    if t.format not in ("auto", "yymmddhh", "yyddhh"):
        raise ConfigError(f"{where}.format: '{t.format}' is not one of auto, yymmddhh, yyddhh")
    if any(c is None for c in t.columns):
        raise ConfigError(f"{where}: the column names for kind '{t.kind}' are missing")
    if (t.window_start is None) != (t.window_end is None):
        missing = "window_end" if t.window_end is None else "window_start"
        raise ConfigError(f"{where}.{missing}: window_start and window_end are declared together")
    if t.window_start is not None:
        if t.kind != "datetime":
            raise ConfigError(f"{where}.window_start: a date window applies to kind 'datetime' only "
                              f"(kind '{t.kind}' declares its days with first_day / num_days)")
        days = {}
        for key in ("window_start", "window_end"):
            value = getattr(t, key)
            try:
                days[key] = dt.date.fromisoformat(str(value))
            except ValueError:
                raise ConfigError(f"{where}.{key}: '{value}' is not an ISO date YYYY-MM-DD") from None
        if days["window_start"] > days["window_end"]:
            raise ConfigError(f"{where}.window_end: {days['window_end']} is before window_start "
                              f"{days['window_start']}")
        # yaml may have parsed them as dates: keep the ISO strings
        t = dataclasses.replace(t, window_start=days["window_start"].isoformat(),
                                window_end=days["window_end"].isoformat())
    return t


def load_layouts(path: str | Path) -> Layouts:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: layout table not found") from None
    if not isinstance(raw, dict) or set(raw) != {"fields", "layouts"}:
        raise ConfigError(f"{path}: expected exactly the keys 'fields' and 'layouts'")
    fields = tuple(raw["fields"])
    layouts = {}
    for name, spec in raw["layouts"].items():
        where = f"{path}: layouts.{name}"
        unknown = set(spec) - _LAYOUT_KEYS
        if unknown:
            raise ConfigError(f"{where}.{sorted(unknown)[0]}: unknown key")
        targets = list(spec["columns"].values())
        if sorted(targets) != sorted(fields):
            missing = sorted(set(fields) - set(targets))
            raise ConfigError(f"{where}.columns: must map onto every field exactly once "
                              f"(missing: {missing}, mapped: {len(targets)} of {len(fields)})")
        layouts[name] = Layout(
            name=name, splits=tuple(spec["splits"]), label=spec["label"], drop=tuple(spec.get("drop", ())),
            namespace=spec.get("namespace", ""), columns=dict(spec["columns"]),
            time=_time(spec["time"], f"{where}.time"),
            alternative_time=_time(spec["alternative_time"], f"{where}.alternative_time")
            if spec.get("alternative_time") else None,
            oov_min_count=spec.get("oov_min_count"), oov_id=spec.get("oov_id"))
    return Layouts(fields=fields, layouts=layouts)


def normalized_schema(fields, with_oracle: bool) -> pa.Schema:
    cols = [pa.field(LABEL, pa.int8(), nullable=False)]
    cols += [pa.field(f, pa.string()) for f in fields]
    cols += [pa.field("hour_of_day", pa.int8()), pa.field("weekday", pa.int8()), pa.field("is_weekend", pa.int8())]
    if with_oracle:
        cols.append(pa.field(ORACLE, pa.float32()))
    return pa.schema(cols)


def split_file(raw_dir: Path, name: str, required: bool = True) -> Path | None:
    """``raw_dir/<name>.csv``, or ``raw_dir/<name>.csv.gz`` when only that one exists; both is a DataError.
    A missing file: the ``.csv`` path (``read_header`` reports it) when ``required``, else None."""
    plain, gz = raw_dir / f"{name}.csv", raw_dir / f"{name}.csv.gz"
    if plain.is_file() and gz.is_file():
        raise DataError(plain, f"both {plain.name} and {gz} exist",
                        expected=f"only one of them; {gz.name} is read transparently when {plain.name} is absent")
    if gz.is_file():
        return gz
    return plain if required or plain.is_file() else None
