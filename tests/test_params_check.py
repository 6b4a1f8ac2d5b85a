"""`recdag params check` and pipeline/params.py: every branch's sections together validate params.yaml."""

from __future__ import annotations

import dataclasses
import shutil
import types
from typing import ClassVar

import pytest

from pipeline import params as allp
from pipeline.core.errors import ConfigError
from tests.conftest import ROOT, run_cli, set_params


@pytest.fixture
def params_copy(tmp_path):
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    return tmp_path


def _run(path, capsys) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = run_cli("params", "check", "--params", str(path))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_real_params_yaml_validates(capsys):
    rc, out, err = _run(ROOT / "params.yaml", capsys)
    assert rc == 0, err
    assert "valid" in out
    assert allp.unclaimed_keys(ROOT / "params.yaml") == []
    every = allp.load_everything(ROOT / "params.yaml")
    for cls in allp.section_classes():
        assert isinstance(getattr(every, cls.SECTION), cls)
    assert isinstance(every.seed, int)


def test_every_branch_contributes_sections():
    names = {cls.SECTION for cls in allp.section_classes()}
    for section in ("avazu", "ctr", "optim", "train", "llm", "tenrec", "ranking", "amazon", "pretrain",
                    "finetune"):
        assert section in names
    assert len(names) == len(allp.section_classes())


def test_unknown_top_level_key_fails(params_copy, capsys):
    with open(params_copy / "params.yaml", "a") as f:
        f.write("\nrankng:\n  num_heads: 2\n")
    assert allp.unclaimed_keys(params_copy / "params.yaml") == ["rankng"]
    rc, out, err = _run(params_copy / "params.yaml", capsys)
    assert rc == 2
    assert err.strip().splitlines() == [err.strip()]                       # one line
    assert "rankng: unknown top-level key" in err


@pytest.mark.parametrize("override, needle", [
    ({"ranking.num_heads": 3}, "ranking.num_heads: 3 does not divide ranking.embedding_dim"),
    ({"ranking.num_headz": 2}, "ranking.num_headz: unknown key"),
    ({"pretrain.lr": "fast"}, "pretrain.lr"),
    ({"seed": -1}, "seed:"),
])
def test_bad_key_in_a_section_fails_naming_it(params_copy, capsys, override, needle):
    set_params(params_copy, **override)
    rc, out, err = _run(params_copy / "params.yaml", capsys)
    assert rc == 2
    assert needle in err
    with pytest.raises(ConfigError, match=needle.split(":")[0]):
        allp.load_everything(params_copy / "params.yaml")


def test_overrides_reach_the_sections():
    with pytest.raises(ConfigError, match="ranking.num_heads"):
        allp.load_everything(ROOT / "params.yaml", overrides={"ranking.num_heads": 3})


def test_sections_are_collected_not_listed():
    @dataclasses.dataclass(frozen=True)
    class A:
        SECTION: ClassVar[str] = "a"
        x: int

    @dataclasses.dataclass(frozen=True)
    class A2:
        SECTION: ClassVar[str] = "a"
        x: int

    class NotADataclass:
        SECTION = "b"

    @dataclasses.dataclass(frozen=True)
    class Sub:                     # a nested block, no SECTION: not a section
        y: int

    one = types.SimpleNamespace(A=A, Sub=Sub, NotADataclass=NotADataclass)
    again = types.SimpleNamespace(A=A)                                      # re-exported: counted once
    assert allp.section_classes((one, again)) == (A,)
    with pytest.raises(TypeError, match="'a' is claimed by both"):
        allp.section_classes((one, types.SimpleNamespace(A2=A2)))
