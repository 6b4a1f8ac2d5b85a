"""The Amazon readers on tiny hand-written files, and each class of bad input -> one clear DataError."""

import gzip
import json

import pytest

from pipeline.core.errors import DataError
from pipeline.seqrec import formats as fm
from pipeline.seqrec.etl import read_finetune


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_ratings_csv(tmp_path):
    p = write(tmp_path / "r.csv", "B001,U1,5.0,1400000000\nB002,U1,4.0,1400000100\nB001,U2,3,1300000000\n")
    rows = [r for b in fm.read_ratings(p, batch_rows=2) for r in b.to_pylist()]
    assert rows[0] == {"item": "B001", "user": "U1", "rating": 5.0, "timestamp": 1400000000}
    assert len(rows) == 3 and rows[2]["rating"] == 3.0


def test_ratings_bad_timestamp(tmp_path):
    p = write(tmp_path / "r.csv", "B001,U1,5.0,1400000000\nB002,U1,4.0,yesterday\n")
    with pytest.raises(DataError) as e:
        list(fm.read_ratings(p))
    assert e.value.row == 2 and e.value.field == "timestamp" and "r.csv" in str(e.value)


def test_ratings_wrong_field_count(tmp_path):
    p = write(tmp_path / "r.csv", "B001,U1,5.0,1400000000\nB002,U1,4.0\n")
    with pytest.raises(DataError, match="item,user,rating,timestamp"):
        list(fm.read_ratings(p))


def test_metadata_v2_and_2014_literal_and_gzip(tmp_path):
    lines = [json.dumps({"asin": "B001", "title": "Rose\tOil  Serum", "brand": "Acme",
                         "category": ["Beauty", "Skin Care", "Face", "Serums"]}),
             "{'asin': 'B002', 'title': 'Yoga Mat', 'categories': [['Sports & Outdoors', 'Yoga']]}",
             json.dumps({"asin": "B003"})]
    p = tmp_path / "meta.json.gz"
    with gzip.open(p, "wt", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    m = list(fm.read_metadata(p))
    assert m[0] == fm.ItemMeta("B001", "Rose Oil Serum", "Acme", ["Beauty", "Skin Care", "Face"])
    assert m[1] == fm.ItemMeta("B002", "Yoga Mat", "", ["Sports & Outdoors", "Yoga"])
    assert m[2].title == "" and m[2].categories == []


def test_metadata_bad_json_line(tmp_path):
    p = write(tmp_path / "meta.json", json.dumps({"asin": "B1", "title": "x"}) + "\n{\"asin\": \"B2\", \"title\": \n")
    with pytest.raises(DataError) as e:
        list(fm.read_metadata(p))
    assert e.value.row == 2 and "JSON" in str(e.value)


def test_metadata_missing_asin(tmp_path):
    p = write(tmp_path / "meta.json", json.dumps({"asin": "B1"}) + "\n" + json.dumps({"title": "no id"}) + "\n")
    with pytest.raises(DataError) as e:
        list(fm.read_metadata(p))
    assert e.value.row == 2 and e.value.field == "asin"


def test_reviews_2014(tmp_path):
    recs = [{"reviewerID": "A2", "asin": "B9", "overall": 5.0, "unixReviewTime": 1300},
            {"reviewerID": "A1", "asin": "B8", "overall": 4.0, "unixReviewTime": 1200},
            {"reviewerID": "A1", "asin": "B7", "overall": 3.0, "unixReviewTime": 1100}]
    p = write(tmp_path / "reviews_Beauty_5.json", "".join(json.dumps(r) + "\n" for r in recs))
    assert list(fm.read_reviews(p))[0] == ("A2", "B9", 5.0, 1300)
    seqs = read_finetune("reviews", p, "beauty")
    assert seqs.users == ["A1", "A2"] and seqs.items[0] == ["B7", "B8"]          # chronological per user


def test_reviews_non_numeric_timestamp(tmp_path):
    p = write(tmp_path / "rev.json", json.dumps({"reviewerID": "A", "asin": "B", "unixReviewTime": "soon"}) + "\n")
    with pytest.raises(DataError) as e:
        list(fm.read_reviews(p))
    assert e.value.row == 1 and e.value.field == "unixReviewTime" and "unix seconds" in str(e.value)


def test_reviews_missing_asin(tmp_path):
    p = write(tmp_path / "rev.json", json.dumps({"reviewerID": "A", "unixReviewTime": 1}) + "\n")
    with pytest.raises(DataError, match="asin"):
        list(fm.read_reviews(p))


def test_s3rec(tmp_path):
    p = write(tmp_path / "Beauty.txt", "1 1 2 3 4 5\n2 6 7 8 9 10 4 11\n")
    assert list(fm.read_s3rec(p)) == [("1", ["1", "2", "3", "4", "5"]), ("2", ["6", "7", "8", "9", "10", "4", "11"])]
    seqs = read_finetune("s3rec", p, "beauty")
    assert seqs.meta is None and seqs.items[1][-1] == "11"


def test_s3rec_non_integer_id(tmp_path):
    p = write(tmp_path / "Beauty.txt", "1 1 2 3\n2 6 x7 8\n")
    with pytest.raises(DataError) as e:
        list(fm.read_s3rec(p))
    assert e.value.row == 2 and e.value.field == "item 2" and "integer" in str(e.value)


def test_recbole_roundtrip_and_reader(tmp_path):
    d = tmp_path / "amazon-x"
    d.mkdir()
    with fm.RecboleWriter(d / "amazon-x.inter", fm.INTER_COLUMNS) as w:
        w.write("u1", "i2", 5.0, 200)
        w.write("u1", "i1", 4.5, 100)
    with fm.RecboleWriter(d / "amazon-x.item", fm.ITEM_COLUMNS) as w:
        w.write("i1", "Rose Oil".split(), "Ac me", ["Beauty", "Skin Care"])
    head = (d / "amazon-x.inter").read_text().splitlines()
    assert head[0] == "user_id:token\titem_id:token\trating:float\ttimestamp:float" and head[1] == "u1\ti2\t5\t200"
    rows = list(fm.read_recbole(d / "amazon-x.inter"))
    assert rows[1] == {"user_id": "u1", "item_id": "i1", "rating": 4.5, "timestamp": 100.0}
    meta = fm.read_recbole_item(d / "amazon-x.item")
    assert meta["i1"] == fm.ItemMeta("i1", "Rose Oil", "Ac me", ["Beauty", "Skin Care"])
    seqs = read_finetune("recbole", d, "x")
    assert seqs.items == [["i1", "i2"]] and "i1" in seqs.meta


def test_recbole_ml100k_style_header(tmp_path):
    p = write(tmp_path / "m.item", "item_id:token\tmovie_title:token_seq\trelease_year:token\n1\tToy Story\t1995\n")
    assert list(fm.read_recbole(p)) == [{"item_id": "1", "movie_title": ["Toy", "Story"], "release_year": "1995"}]


@pytest.mark.parametrize("text,field,row", [
    ("user_id\titem_id:token\n", "column 1", 1),                       # no type
    ("user_id:token\titem_id:token\trating:float\nu\ti\tfive\n", "rating", 2),
    ("user_id:token\titem_id:token\nu\ti\textra\n", None, 2),
])
def test_recbole_bad(tmp_path, text, field, row):
    p = write(tmp_path / "x.inter", text)
    with pytest.raises(DataError) as e:
        list(fm.read_recbole(p, required=("user_id",)))
    assert e.value.row == row and e.value.field == field
