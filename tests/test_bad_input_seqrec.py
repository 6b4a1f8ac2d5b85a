"""Bad input to the Amazon branch (v2 ratings CSV, metadata, 2014 reviews, RecBole atomic files, S3-Rec text),
through the real stage commands (`recdag amazon download` / `recdag amazon etl`) in a scratch project built
from tiny hand-written files: each class exits 2 with one `error:` line naming the file and the row/field, and
leaves no output or temporary file behind. Plus the inputs that must be accepted (UTF-8 BOM, `~` paths,
RecBole title aliases such as ml-100k's `movie_title`)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from tests.conftest import run_cli, set_params

POOL_USERS, POOL_ITEMS, PER_USER = 40, 20, 5
FT_USERS = 10


def ratings_lines() -> list[str]:
    """The pool: 40 users x 5 ratings (200 rows) over 20 items, no header."""
    return [f"B{(u * 3 + k) % POOL_ITEMS:03d},P{u:02d},{1 + (u + k) % 5}.0,{1400000000 + 1000 * u + k}"
            for u in range(POOL_USERS) for k in range(PER_USER)]


def meta_lines(text: bool = True) -> list[str]:
    return [json.dumps({"asin": f"B{i:03d}", **({"title": f"Rose oil serum number {i % 7}", "brand": f"Acme{i % 3}"}
                                                 if text else {"price": "$1.00"}),
                        "category": ["Beauty", "Skin Care"]}) for i in range(POOL_ITEMS)]


def inter_lines() -> list[str]:
    """A RecBole fine-tuning set: 10 users x 5 events (header + 50 rows)."""
    return (["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
            + [f"F{u}\t{(u + k) % 12 + 1}\t{1 + k % 5}\t{881250000 + 100 * k + u}" for u in range(FT_USERS)
               for k in range(PER_USER)])


def item_lines(title_col: str = "title") -> list[str]:
    return ([f"item_id:token\t{title_col}:token_seq\trelease_year:token\tclass:token_seq"]
            + [f"{i}\tToy Story part {i}\t1995\tAnimation Comedy" for i in range(1, 13)])


def review_lines() -> list[str]:
    return [json.dumps({"reviewerID": f"R{u}", "asin": f"B{(u + k) % POOL_ITEMS:03d}", "overall": 4.0,
                        "unixReviewTime": 1300000000 + 100 * k + u}) for u in range(FT_USERS) for k in range(PER_USER)]


def write(path: Path, lines: list[str], *, gz: bool = False, bom: bool = False) -> Path:
    data = ("\ufeff" if bom else "") + "\n".join(lines) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path.write_bytes(gzip.compress(data.encode("utf-8")))
    else:
        path.write_text(data, encoding="utf-8")
    return path


@pytest.fixture
def amazon(project):
    """A scratch project whose amazon.source=local points at tiny good files under src/ (edit them, then
    :func:`download`): v2 ratings + metadata for the pool, a RecBole folder for the `beauty` set."""
    src = project / "src"
    write(src / "ratings.csv", ratings_lines())
    write(src / "meta.json", meta_lines())
    write(src / "beauty" / "beauty.inter", inter_lines())
    write(src / "beauty" / "beauty.item", item_lines())
    set_params(project, **{"amazon.source": "local", "amazon.local.ratings": [str(src / "ratings.csv")],
                           "amazon.local.metadata": [str(src / "meta.json")],
                           "amazon.local.finetune_format": "recbole", "amazon.local.beauty": str(src / "beauty"),
                           "amazon.local.sports": "", "amazon.finetune_datasets": ["beauty"],
                           "amazon.scales": [100], "amazon.min_user_interactions": 3, "amazon.vocab_size": 60,
                           "amazon.buckets": 2, "amazon.batch_rows": 16})
    return project


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def stage(capsys, name: str) -> tuple[int, str]:
    capsys.readouterr()
    code = run_cli("amazon", name)
    return code, capsys.readouterr().err


def download(capsys) -> None:
    code, err = stage(capsys, "download")
    assert code == 0, err


def fails(capsys, root: Path, name: str, *needles: str) -> str:
    """Run `recdag amazon <name>`: exit 2, exactly one `error:` line holding every needle, no traceback,
    and not one new file or folder (no outputs, no temporaries)."""
    before = tree(root)
    code, err = stage(capsys, name)
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    assert tree(root) == before, sorted(tree(root) - before)
    return lines[0]


def passes(capsys) -> dict:
    code, err = stage(capsys, "etl")
    assert code == 0, err
    return json.loads(Path("reports/amazon/etl.json").read_text())


# ------------------------------------------------------------------ 1. empty / nan / inf ratings and timestamps


def ratings_with(row: int, rating: str | None = None, timestamp: str | None = None) -> list[str]:
    lines = ratings_lines()
    item, user, r, t = lines[row - 1].split(",")
    lines[row - 1] = ",".join([item, user, r if rating is None else rating, t if timestamp is None else timestamp])
    return lines


@pytest.mark.parametrize("gz", [False, True], ids=["csv", "csv.gz"])
@pytest.mark.parametrize("row,field,value,problem", [
    (7, "timestamp", "", "empty timestamp"),
    (7, "timestamp", "nan", "non-finite timestamp 'nan'"),
    (150, "timestamp", "1.4e9", "non-integer timestamp"),
    (3, "rating", "", "empty rating"),
    (3, "rating", "nan", "non-finite rating 'nan'"),
    (199, "rating", "inf", "non-finite rating 'inf'"),
])
def test_ratings_csv_bad_number(amazon, capsys, gz, row, field, value, problem):
    name = "ratings.csv.gz" if gz else "ratings.csv"
    f = write(amazon / "src" / name, ratings_with(row, **{field: value}), gz=gz)
    if gz:
        (amazon / "src" / "ratings.csv").unlink()
    set_params(amazon, **{"amazon.local.ratings": [str(f)]})
    download(capsys)
    fails(capsys, amazon, "etl", f"000-{name}, row {row}, field '{field}': {problem}", "expected")


def test_ratings_row_counts_blank_lines(amazon, capsys):
    lines = ratings_lines()
    lines.insert(2, "")                                        # line 3 is blank: the bad row 6 is line 7
    lines[6] = lines[6].rsplit(",", 1)[0] + ",nan"
    write(amazon / "src" / "ratings.csv", lines)
    download(capsys)
    fails(capsys, amazon, "etl", "row 7, field 'timestamp'")


@pytest.mark.parametrize("field,value,problem", [
    ("overall", float("nan"), "non-finite rating nan"),       # json.dumps writes NaN, json.loads reads it
    ("overall", "nan", "non-finite rating 'nan'"),
    ("overall", float("inf"), "non-finite rating inf"),
    ("overall", None, "empty rating"),
    ("unixReviewTime", float("nan"), "non-finite timestamp nan"),
    ("unixReviewTime", "inf", "non-finite timestamp 'inf'"),
    ("unixReviewTime", "", "missing unixReviewTime"),
])
def test_reviews_bad_number(amazon, capsys, field, value, problem):
    lines = review_lines()
    obj = json.loads(lines[4])
    obj[field] = value
    lines[4] = json.dumps(obj)
    f = write(amazon / "src" / "reviews_Beauty_5.json", lines)
    set_params(amazon, **{"amazon.local.finetune_format": "reviews", "amazon.local.beauty": str(f)})
    download(capsys)
    fails(capsys, amazon, "etl", f"beauty.json, row 5, field '{field}': {problem}")


@pytest.mark.parametrize("field,value,problem", [
    ("timestamp", "", "empty timestamp"),
    ("timestamp", "nan", "non-finite timestamp 'nan'"),
    ("timestamp", "-inf", "non-finite timestamp '-inf'"),
    ("rating", "nan", "non-finite rating 'nan'"),
    ("rating", "inf", "non-finite rating 'inf'"),
    ("rating", "", "empty rating"),
    ("rating", "five", "non-numeric value 'five'"),
])
def test_recbole_inter_bad_number(amazon, capsys, field, value, problem):
    """Before: an empty or `nan` timestamp was written as 0 (moving the event first) and `nan` ratings passed."""
    lines = inter_lines()
    vals = lines[9].split("\t")
    vals[{"rating": 2, "timestamp": 3}[field]] = value
    lines[9] = "\t".join(vals)
    write(amazon / "src" / "beauty" / "beauty.inter", lines)
    download(capsys)
    fails(capsys, amazon, "etl", f"beauty.inter, row 10, field '{field}': {problem}")


def test_recbole_token_typed_timestamp_is_checked_too(amazon, capsys):
    lines = inter_lines()
    lines[0] = lines[0].replace("timestamp:float", "timestamp:token")
    lines[4] = lines[4].rsplit("\t", 1)[0] + "\tnan"
    write(amazon / "src" / "beauty" / "beauty.inter", lines)
    download(capsys)
    fails(capsys, amazon, "etl", "beauty.inter, row 5, field 'timestamp': non-finite timestamp 'nan'")


def test_s3rec_non_integer_id(amazon, capsys):
    """S3-Rec lines carry no rating or timestamp; a `nan` id is named by line and position."""
    f = write(amazon / "src" / "Beauty.txt", ["1 1 2 3 4 5", "2 6 7 nan 9 10"])
    set_params(amazon, **{"amazon.local.finetune_format": "s3rec", "amazon.local.beauty": str(f),
                          "finetune.item_repr": "id"})
    download(capsys)
    fails(capsys, amazon, "etl", "beauty.txt, row 2, field 'item 3': non-integer id 'nan'")


# ------------------------------------------------------------------ 2. broken files: gzip, field counts, BOM, ~


def test_truncated_csv_gz(amazon, capsys):
    data = gzip.compress(("\n".join(ratings_lines()) + "\n").encode())
    f = amazon / "src" / "ratings.csv.gz"
    f.write_bytes(data[: len(data) // 2])
    set_params(amazon, **{"amazon.local.ratings": [str(f)]})
    download(capsys)
    fails(capsys, amazon, "etl", "000-ratings.csv.gz: truncated or corrupt gzip stream")


def test_truncated_metadata_json_gz(amazon, capsys):
    data = gzip.compress(("\n".join(meta_lines()) + "\n").encode())
    f = amazon / "src" / "meta.json.gz"
    f.write_bytes(data[:-6])
    set_params(amazon, **{"amazon.local.metadata": [str(f)]})
    download(capsys)
    fails(capsys, amazon, "etl", "000-meta.json.gz: truncated or corrupt gzip stream")


def test_gzip_bytes_under_a_plain_name(amazon, capsys):
    """Named by the user's own path, at download (before anything is linked)."""
    f = amazon / "src" / "ratings.csv"
    f.write_bytes(gzip.compress(f.read_bytes()))
    line = fails(capsys, amazon, "download", f"{f}: is gzip-compressed but its name does not end in .gz")
    assert "ratings.csv.gz (read transparently)" in line


def test_gzip_bytes_under_a_plain_name_inside_a_recbole_folder(amazon, capsys):
    f = amazon / "src" / "beauty" / "beauty.inter"
    f.write_bytes(gzip.compress(f.read_bytes()))
    download(capsys)
    fails(capsys, amazon, "etl", "beauty.inter: is gzip-compressed but its name does not end in .gz")


@pytest.mark.parametrize("bad", ["B003,P09,4.0", "B003,P09,4.0,1400000000,extra"])
def test_ratings_field_count_names_the_row(amazon, capsys, bad):
    lines = ratings_lines()
    lines[120] = bad
    write(amazon / "src" / "ratings.csv", lines)
    download(capsys)
    n = len(bad.split(","))
    fails(capsys, amazon, "etl", f"000-ratings.csv, row 121: {n} fields instead of 4",
          "item,user,rating,timestamp")


def test_recbole_field_count_names_the_row(amazon, capsys):
    lines = inter_lines()
    lines[20] += "\t1"
    write(amazon / "src" / "beauty" / "beauty.inter", lines)
    download(capsys)
    fails(capsys, amazon, "etl", "beauty.inter, row 21: 5 tab-separated fields instead of 4")


def test_not_utf8_names_the_row(amazon, capsys):
    f = amazon / "src" / "meta.json"
    lines = f.read_bytes().split(b"\n")
    lines[3] = lines[3].replace(b"Rose", b"R\xe9se")
    f.write_bytes(b"\n".join(lines))
    download(capsys)
    fails(capsys, amazon, "etl", "000-meta.json, row 4: not UTF-8 text")


def test_utf8_bom_and_crlf_are_accepted(amazon, capsys):
    write(amazon / "src" / "ratings.csv", ratings_lines(), bom=True)
    write(amazon / "src" / "meta.json", meta_lines(), bom=True)
    (amazon / "src" / "beauty" / "beauty.inter").write_bytes(
        ("\ufeff" + "\r\n".join(inter_lines()) + "\r\n").encode())
    write(amazon / "src" / "beauty" / "beauty.item", item_lines(), bom=True)
    download(capsys)
    rep = passes(capsys)
    assert rep["pool"]["ratings_rows"] == POOL_USERS * PER_USER and rep["metadata_items"] == POOL_ITEMS
    assert rep["finetune"]["beauty"]["interactions"] == FT_USERS * PER_USER
    assert rep["finetune"]["beauty"]["items_with_text"] == 12
    inter = Path("data/amazon/finetune/amazon-beauty/amazon-beauty.inter").read_text()
    assert "\r" not in inter and inter.startswith("user_id:token\t")


def test_expanded_home_paths_are_read(amazon, capsys, monkeypatch):
    """`~` in amazon.local paths: the params layer (and download) expand it; the readers get the real path."""
    monkeypatch.setenv("HOME", str(amazon / "src"))
    set_params(amazon, **{"amazon.local.ratings": ["~/ratings.csv"], "amazon.local.metadata": ["~/meta.json"],
                          "amazon.local.beauty": "~/beauty"})
    download(capsys)
    assert passes(capsys)["pool"]["ratings_rows"] == POOL_USERS * PER_USER


# ------------------------------------------------------------------ 3. item text required where it is used


def test_item_table_without_text_columns_is_an_error(amazon, capsys):
    write(amazon / "src" / "beauty" / "beauty.item", ["item_id:token\trelease_year:token"]
          + [f"{i}\t1995" for i in range(1, 13)])
    download(capsys)
    line = fails(capsys, amazon, "etl", "beauty.item, row 1: no item-text column (found: item_id, release_year)",
                 "title", "movie_title", "brand", "finetune.item_repr: id")
    assert "expected" in line


def test_item_table_without_text_is_fine_with_item_repr_id(amazon, capsys):
    write(amazon / "src" / "beauty" / "beauty.item", ["item_id:token\trelease_year:token"]
          + [f"{i}\t1995" for i in range(1, 13)])
    set_params(amazon, **{"finetune.item_repr": "id"})
    download(capsys)
    assert passes(capsys)["finetune"]["beauty"]["items_with_text"] == 0


def test_recbole_without_item_file_needs_item_repr_id(amazon, capsys):
    (amazon / "src" / "beauty" / "beauty.item").unlink()
    download(capsys)
    fails(capsys, amazon, "etl", "finetune/beauty: no .item file", "finetune.item_repr: id")


def test_empty_text_columns_are_an_error(amazon, capsys):
    write(amazon / "src" / "beauty" / "beauty.item", ["item_id:token\ttitle:token_seq\tbrand:token"]
          + [f"{i}\t\t" for i in range(1, 13)])
    download(capsys)
    fails(capsys, amazon, "etl", "beauty.item: none of the 12 items of beauty has a title or brand",
          "finetune.item_repr: id")


def test_s3rec_with_text_repr_is_an_error(amazon, capsys):
    f = write(amazon / "src" / "Beauty.txt", [f"{u} " + " ".join(str(k + 1) for k in range(5)) for u in range(1, 9)])
    set_params(amazon, **{"amazon.local.finetune_format": "s3rec", "amazon.local.beauty": str(f)})
    download(capsys)
    fails(capsys, amazon, "etl", "beauty.txt: S3-Rec files carry item ids only", "finetune.item_repr: id")


def test_pool_metadata_without_text_is_an_error(amazon, capsys):
    write(amazon / "src" / "meta.json", meta_lines(text=False))
    download(capsys)
    fails(capsys, amazon, "etl", "000-meta.json: no item has a title or brand (keys found: asin, price, category)",
          "pretrain.item_repr: id")


def test_ml100k_movie_title_gives_item_text(amazon, capsys):
    """ml-100k's `.item` header is item_id, movie_title:token_seq, release_year, class:token_seq: the title
    alias is read as the title (before: no text, every metric 0.0) and class as the categories."""
    write(amazon / "src" / "beauty" / "beauty.item", item_lines("movie_title"))
    download(capsys)
    rep = passes(capsys)["finetune"]["beauty"]
    assert rep["items_with_text"] == 12 and rep["tokenizer_coverage"]["title"]["empty_items"] == 0
    rows = Path("data/amazon/finetune/amazon-beauty/amazon-beauty.item").read_text().splitlines()
    assert rows[0] == "item_id:token\ttitle:token_seq\tbrand:token\tcategories:token_seq"
    assert rows[1].split("\t")[1] == "Toy Story part 1" and rows[1].split("\t")[3] == "Animation Comedy"


def test_reviews_items_without_metadata_text_is_an_error(amazon, capsys):
    """2014 reviews take their item text from the pool metadata: none of the set's items there is an error
    (after the pool is built, inside the stage's temporaries: still nothing left behind)."""
    lines = [json.dumps({**json.loads(ln), "asin": "X" + json.loads(ln)["asin"]}) for ln in review_lines()]
    f = write(amazon / "src" / "reviews_Beauty_5.json", lines)
    set_params(amazon, **{"amazon.local.finetune_format": "reviews", "amazon.local.beauty": str(f)})
    download(capsys)
    fails(capsys, amazon, "etl", "beauty.json: none of the", "items of beauty has a title or brand in the metadata",
          "finetune.item_repr: id")
