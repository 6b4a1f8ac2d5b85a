"""Typed params, per stage: a stage parses only the sections it declares, reads only declared keys, and a
mistake in another branch's section does not stop it."""

import pytest
import yaml

from pipeline.core.errors import ConfigError
from pipeline.core.params import ParamsView, UndeclaredParam, expand, load_all, load_stage
from pipeline.ctr.params import AvazuParams, OptimParams, TrainParams
from tests.conftest import ROOT, run_cli

PARAMS_FILE = ROOT / "params.yaml"


def _avazu(overrides=None, keys=("seed", "avazu")):
    return load_stage(PARAMS_FILE, keys, (AvazuParams,), overrides=overrides)


def test_defaults_load_typed():
    p = _avazu()
    assert p.avazu.source == "synthetic"
    assert p.avazu.sources == ["x1", "x2", "x4"]
    assert isinstance(p.avazu.sample.frac, float)
    assert p.avazu.split_valid.sources == ["x2"]
    assert p.seed == 2024


@pytest.mark.parametrize("override, needle", [
    ({"avazu.smaple": {"frac": 0.2}}, "avazu.smaple: unknown key"),
    ({"avazu.sample.frac": "0.2"}, "avazu.sample.frac: expected a number"),
    ({"avazu.min_count": 2.5}, "avazu.min_count: expected an integer"),
    ({"avazu.source": "kaggle"}, "avazu.source: 'kaggle' is not one of"),
    ({"avazu.sources": ["x3"]}, "avazu.sources: 'x3'"),
    ({"avazu.sources": ["x4"]}, "avazu.split_valid.sources: 'x2'"),
    ({"avazu.sample.frac": 1.5}, "avazu.sample.frac: 1.5 is out of range (expected (0, 1))"),
    ({"avazu.source": "local"}, "avazu.local_dir"),
    ({"seed": True}, "seed: expected an integer"),
    ({"seed": 2**70}, "seed: 1180591620717411303424 is out of range (expected [0, 2**32))"),
])
def test_bad_params_name_the_key(override, needle):
    with pytest.raises(ConfigError) as e:
        _avazu(override)
    assert needle in str(e.value)


def test_missing_key(tmp_path):
    (tmp_path / "p.yaml").write_text("seed: 1\n")
    with pytest.raises(ConfigError, match="avazu: missing section"):
        load_stage(tmp_path / "p.yaml", ("avazu.sources",), (AvazuParams,))


def test_only_x4_is_a_valid_configuration():
    p = _avazu({"avazu.sources": ["x4"], "avazu.split_valid.sources": [], "avazu.sample.sources": []})
    assert p.avazu.sources == ["x4"]


def test_undeclared_key_cannot_be_read():
    p = load_stage(PARAMS_FILE, ("avazu.sources", "avazu.sample.frac"), (AvazuParams,))
    assert p.avazu.sources == ["x1", "x2", "x4"] and p.avazu.sample.frac == 0.2
    assert isinstance(p.avazu, ParamsView)
    for read in (lambda: p.avazu.min_count, lambda: p.avazu.sample.sources, lambda: p.seed):
        with pytest.raises(UndeclaredParam, match="does not declare it"):
            read()


def test_whole_section_is_the_real_dataclass():
    p = load_stage(PARAMS_FILE, ("seed", "optim", "train"), (OptimParams, TrainParams))
    assert isinstance(p.optim, OptimParams) and isinstance(p.train, TrainParams)


def test_foreach_templates_expand():
    assert expand(["llm_phase${key}", "a.${item}", "b"], 2) == ["llm_phase2", "a.2", "b"]
    assert expand(["llm_phase${item.phase}", "c"], {"phase": 1}) == ["llm_phase1", "c"]


def test_a_mistake_in_another_branch_does_not_stop_a_stage(tmp_path):
    """A broken Tenrec (or Amazon) section leaves every Avazu section loadable, and vice versa."""
    data = yaml.safe_load(PARAMS_FILE.read_text())
    data["ranking"]["num_heads"] = "many"
    data["finetune"]["bogus"] = 1
    data["optim"]["rho"] = -1.0
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    assert load_stage(path, ("seed", "avazu"), (AvazuParams,)).avazu.sources == ["x1", "x2", "x4"]
    with pytest.raises(ConfigError, match="optim.rho"):
        load_stage(path, ("seed", "optim"), (OptimParams,))
    from pipeline.tenrec.params import TenrecParams

    assert load_stage(path, ("tenrec",), (TenrecParams,)).tenrec.scenario == "QB-video"


def test_a_stage_runs_with_another_branchs_section_broken(project, capsys):
    """End to end through the CLI: avazu_download succeeds while `ranking` is invalid."""
    data = yaml.safe_load((project / "params.yaml").read_text())
    data["ranking"]["num_heads"] = "many"
    data["avazu"]["synthetic"]["rows"] = 2000
    (project / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    assert run_cli("avazu", "download") == 0
    assert (project / "data/avazu/raw/manifest.json").is_file()


def test_load_all_is_unrestricted():
    ns = load_all(PARAMS_FILE, (AvazuParams, OptimParams))
    assert ns.seed == 2024 and ns.optim.name in ("adam", "sam", "helen") and ns.avazu.min_count >= 1
