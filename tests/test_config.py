import pytest

from pipeline.core.config import load_params
from pipeline.core.errors import ConfigError
from tests.conftest import ROOT


def test_defaults_load_typed():
    p = load_params(ROOT / "params.yaml")
    assert p.avazu.source == "synthetic"
    assert p.avazu.sources == ["x1", "x2", "x4"]
    assert isinstance(p.avazu.sample.frac, float)
    assert p.avazu.split_valid.sources == ["x2"]


@pytest.mark.parametrize("override, needle", [
    ({"avazu.smaple": {"frac": 0.2}}, "avazu.smaple: unknown key"),
    ({"avazu.sample.frac": "0.2"}, "avazu.sample.frac: expected a number"),
    ({"avazu.min_count": 2.5}, "avazu.min_count: expected an integer"),
    ({"avazu.source": "kaggle"}, "avazu.source: 'kaggle' is not one of"),
    ({"avazu.sources": ["x3"]}, "avazu.sources: 'x3'"),
    ({"avazu.sources": ["x4"]}, "avazu.split_valid.sources: 'x2'"),
    ({"avazu.sample.frac": 1.5}, "avazu.sample.frac: 1.5 is not in (0, 1)"),
    ({"avazu.source": "local"}, "avazu.local_dir"),
    ({"seed": True}, "seed: expected an integer"),
])
def test_bad_params_name_the_key(override, needle):
    with pytest.raises(ConfigError) as e:
        load_params(ROOT / "params.yaml", overrides=override)
    assert needle in str(e.value)


def test_missing_key(tmp_path):
    (tmp_path / "p.yaml").write_text("seed: 1\n")
    with pytest.raises(ConfigError, match="avazu: missing key"):
        load_params(tmp_path / "p.yaml")


def test_only_x4_is_a_valid_configuration():
    p = load_params(ROOT / "params.yaml", overrides={"avazu.sources": ["x4"], "avazu.split_valid.sources": [],
                                                      "avazu.sample.sources": []})
    assert p.avazu.sources == ["x4"]
