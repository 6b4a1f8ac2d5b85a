"""`recdag dag check` / `recdag dag write`: dvc.yaml's code deps = each stage module's import closure, its
params = the module's PARAMS (pipeline/dag.py)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml

from pipeline import dag
from tests.conftest import ROOT, leftovers, run_cli

# ------------------------------------------------------------------------------------- the real repository


def test_real_dvc_yaml_is_exact(capsys):
    """THE acceptance test of issue 13: the real dvc.yaml is exact. It fails while some branch's stages,
    PARAMS or dvc.yaml blocks are still being reworked; `recdag dag check` lists what is off and
    `recdag dag write` rewrites the lists."""
    rc = run_cli("dag", "check", "--dvc-yaml", str(ROOT / "dvc.yaml"))
    out = capsys.readouterr()
    assert rc == 0, ("dvc.yaml is not exact (code deps vs import closure, params vs PARAMS): run "
                     f"`recdag dag check`, fix the code or `recdag dag write`:\n{out.out}{out.err}")
    assert "all exact" in out.out


def test_every_package_init_is_docstring_only():
    """Package __init__.py files are never declared as deps: sound only while they run no code."""
    inits = sorted(p for top in dag.CODE_PACKAGES for p in (ROOT / top).rglob("__init__.py"))
    assert inits
    bad = [str(p.relative_to(ROOT)) for p in inits if not dag.is_docstring_only(p)]
    assert not bad, f"package __init__.py files holding more than a docstring: {bad}"


def test_static_registry_is_the_cli_registry():
    from stages.cli import COMMANDS

    assert dag.read_registry(ROOT) == COMMANDS


# ------------------------------------------------------------------------------------- a planted copy of it


def _copy_repo(dst: Path) -> Path:
    for name in ("pipeline", "stages"):
        shutil.copytree(ROOT / name, dst / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(ROOT / name, dst / name)
    return dst


@pytest.fixture(scope="module")
def exact_copy(tmp_path_factory):
    """A copy of the repository whose dvc.yaml `recdag dag write` made exact: (root, original, exact text)."""
    root = _copy_repo(tmp_path_factory.mktemp("repo"))
    original = (root / "dvc.yaml").read_text()
    dag.write(root / "dvc.yaml")
    return root, original, (root / "dvc.yaml").read_text()


@pytest.fixture
def copy(exact_copy):
    """The copy's dvc.yaml, exact, for planting."""
    root, _, exact = exact_copy
    (root / "dvc.yaml").write_text(exact)
    return root / "dvc.yaml"


def _victim(path: Path) -> dag.Stage:
    """A stage with at least two code deps and two params (the planting ground)."""
    return next(s for s in dag.load_dag(path).stages if len(s.closure) >= 2 and len(s.wanted_params) >= 2)


def _list_lines(path: Path, stage: str, key: str) -> tuple[list[str], int, int]:
    """The file's lines and the [first, last] line index of ``stage``'s ``key`` list items."""
    lines = path.read_text().splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if re.match(rf"^  {re.escape(stage)}:", line))
    head = next(i for i in range(start + 1, len(lines)) if re.match(rf"^\s+{key}:\s*$", lines[i]))
    indent = len(lines[head + 1]) - len(lines[head + 1].lstrip())
    end = head + 1
    while end + 1 < len(lines) and lines[end + 1].startswith(" " * indent + "- "):
        end += 1
    return lines, head + 1, end


def _plant(path: Path, stage: str, key: str, *, remove: str | None = None, add: str | None = None) -> None:
    lines, first, last = _list_lines(path, stage, key)
    if add is not None:
        lines.insert(last + 1, lines[last][: lines[last].index("-")] + f"- {add}\n")
    if remove is not None:
        (i,) = [i for i in range(first, last + 1) if lines[i].strip() == f"- {remove}"]
        del lines[i]
    path.write_text("".join(lines))


def _check(path: Path, capsys) -> tuple[int, str]:
    capsys.readouterr()
    rc = run_cli("dag", "check", "--dvc-yaml", str(path))
    out = capsys.readouterr()
    return rc, out.out + out.err


def test_write_makes_the_copy_exact_keeping_comments_and_stages(copy, exact_copy, capsys):
    root, original, written = exact_copy
    rc, out = _check(copy, capsys)
    assert rc == 0 and "all exact" in out, out

    def comments(text):
        return [line[line.index("#"):] for line in text.splitlines() if "#" in line]

    assert comments(written) == comments(original)
    assert list(yaml.safe_load(written)["stages"]) == list(yaml.safe_load(original)["stages"])
    # only `- item` lines of deps/params lists (and their `deps:` / `params:` keys, when added or dropped) differ
    import difflib

    changed = [line[1:] for line in difflib.unified_diff(original.splitlines(), written.splitlines(), n=0,
                                                          lineterm="")
               if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    assert all(re.match(r"^\s+(- \S+|params:|deps:)$", line) for line in changed), changed
    assert dag.write(root / "dvc.yaml") == [] and (root / "dvc.yaml").read_text() == written   # idempotent
    assert not leftovers(root)


def test_written_dvc_yaml_is_valid_for_dvc(exact_copy, tmp_path):
    """DVC itself parses the rewritten file (foreach / matrix expanded with params.yaml) into the same stages."""
    from dvc.repo import Repo

    root, original, written = exact_copy

    def stage_names(name: str, text: str) -> list[str]:
        d = tmp_path / name
        d.mkdir()
        (d / "dvc.yaml").write_text(text)
        shutil.copy(root / "params.yaml", d / "params.yaml")
        Repo.init(str(d), no_scm=True)
        with Repo(str(d)) as repo:
            return sorted(s.name for s in repo.index.stages)

    names = stage_names("written", written)
    assert names and names == stage_names("original", original)


@pytest.mark.parametrize("kind", ["missing dep", "extra dep", "missing param", "extra param"])
def test_planted_drift_is_reported_then_fixed(copy, capsys, kind):
    exact = copy.read_text()
    stage = _victim(copy)
    if kind == "missing dep":
        what = stage.closure[-1]
        _plant(copy, stage.name, "deps", remove=what)
    elif kind == "extra dep":
        what = next(f"{p.relative_to(copy.parent).as_posix()}" for p in sorted((copy.parent / "pipeline")
                    .rglob("*.py")) if p.name != "__init__.py"
                    and p.relative_to(copy.parent).as_posix() not in stage.closure)
        _plant(copy, stage.name, "deps", add=what)
    elif kind == "missing param":
        what = stage.wanted_params[0]
        _plant(copy, stage.name, "params", remove=what)
    else:
        what = "no_such_section.key"
        _plant(copy, stage.name, "params", add=what)
    assert copy.read_text() != exact
    rc, out = _check(copy, capsys)
    assert rc == 1
    assert f"{stage.name}: {kind} {what}\n" in out
    assert out.count(": ") - out.count("dag check:") == 1, out          # that drift, nothing else
    capsys.readouterr()
    assert run_cli("dag", "write", "--dvc-yaml", str(copy)) == 0
    said = capsys.readouterr().out
    verb = {"missing": "added", "extra": "removed"}[kind.split()[0]]
    assert f"{stage.name}: {verb} {kind.split()[1]} {what}" in said
    assert copy.read_text() == exact                                   # the canonical file back, to the byte
    assert _check(copy, capsys)[0] == 0


def test_all_four_drifts_at_once(copy, capsys):
    stage = _victim(copy)
    _plant(copy, stage.name, "deps", remove=stage.closure[0], add="stages/cli.py")
    _plant(copy, stage.name, "params", remove=stage.wanted_params[-1], add="bogus")
    rc, out = _check(copy, capsys)
    assert rc == 1
    for line in (f"missing dep {stage.closure[0]}", "extra dep stages/cli.py",
                 f"missing param {stage.wanted_params[-1]}", "extra param bogus"):
        assert f"{stage.name}: {line}" in out
    assert "dag check: 4 drifts in 1 of" in out
    dag.write(copy)
    assert _check(copy, capsys)[0] == 0


# ------------------------------------------------------------------------------------- a synthetic tree

DOC = '"""docstring only."""\n'

CLI = '''"""registry"""
import typer
COMMANDS: dict[str, dict[str, str]] = {
    "b": {"one": "stages.b.one:one", "two": "stages.b.two:two"},
    "": {"top": "stages.top:top"},
}
'''


def _tree(root: Path, files: dict[str, str]) -> Path:
    base = {"pipeline/__init__.py": DOC, "stages/__init__.py": DOC, "stages/cli.py": CLI}
    for rel, text in {**base, **files}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def test_closure_follows_every_kind_of_import(tmp_path):
    root = _tree(tmp_path, {
        "stages/b/__init__.py": DOC,
        "stages/b/one.py": (
            '"""stage"""\nfrom __future__ import annotations\nimport os\nimport numpy as np\n'
            "from pipeline import mod_a                 # from pkg import module\n"
            "from pipeline.core.b import thing          # from module import name\n"
            "from . import helper                       # relative: stages/b/helper.py\n"
            "def run():\n    from pipeline.lazy import go  # function-local\n"
            "    import pipeline.sub.deep as deep\n"),
        "stages/b/helper.py": "from ..common import X\n",            # relative, two levels
        "stages/common.py": "X = 1\n",
        "pipeline/mod_a.py": "import torch\n",
        "pipeline/core/__init__.py": DOC,
        "pipeline/core/b.py": "thing = 1\n",
        "pipeline/lazy.py": "def go():\n    import pipeline.transitive\n",
        "pipeline/transitive.py": "",
        "pipeline/sub/__init__.py": "",
        "pipeline/sub/deep.py": "from .sibling import y\nfrom .. import top_rel\n",
        "pipeline/sub/sibling.py": "y = 2\n",
        "pipeline/top_rel.py": "",
        "pipeline/unused.py": "",
        "stages/b/two.py": "from stages import cli\n",
    })
    assert dag.import_closure(root, "stages.b.one") == (
        "pipeline/core/b.py", "pipeline/lazy.py", "pipeline/mod_a.py", "pipeline/sub/deep.py",
        "pipeline/sub/sibling.py", "pipeline/top_rel.py", "pipeline/transitive.py", "stages/b/helper.py",
        "stages/b/one.py", "stages/common.py")
    # the dispatcher is a dep only of a module that imports it
    assert dag.import_closure(root, "stages.b.two") == ("stages/b/two.py", "stages/cli.py")


def test_non_trivial_init_in_a_closure_is_an_error(tmp_path):
    root = _tree(tmp_path, {"stages/top.py": "import pipeline.pkg.mod\n",
                            "pipeline/pkg/__init__.py": '"""doc"""\nfrom pipeline.pkg.mod import f\n',
                            "pipeline/pkg/mod.py": "def f(): pass\n"})
    with pytest.raises(dag.DagError, match=r"pipeline/pkg/__init__.py holds code.*stages/top.py:1"):
        dag.import_closure(root, "stages.top")
    (root / "pipeline/pkg/__init__.py").write_text('"""doc"""\n')
    assert dag.import_closure(root, "stages.top") == ("pipeline/pkg/mod.py", "stages/top.py")


def test_unresolved_import_is_an_error(tmp_path):
    root = _tree(tmp_path, {"stages/top.py": '"""x"""\n\nfrom pipeline.gone import thing\n'})
    with pytest.raises(dag.DagError, match=r"stages/top.py:3: imports pipeline.gone, which is no module"):
        dag.import_closure(root, "stages.top")


def test_params_read_statically(tmp_path):
    root = _tree(tmp_path, {"stages/top.py": 'raise SystemExit("never imported")\nPARAMS = ("seed", "a.b")\n',
                            "stages/b/__init__.py": DOC, "stages/b/one.py": "",
                            "stages/b/two.py": "PARAMS = tuple(['a'])\n"})
    assert dag.module_params(root, "stages.top") == ("seed", "a.b")
    assert dag.module_params(root, "stages.b.one") == ()
    with pytest.raises(dag.DagError, match="stages/b/two.py:1: PARAMS must be a literal"):
        dag.module_params(root, "stages.b.two")


def test_command_mapping():
    reg = {"b": {"one": "stages.b.one:one"}, "": {"top": "stages.top:app"}}
    assert dag.command_target("recdag b one ${item} --x 1", reg) == "stages.b.one"
    assert dag.command_target("recdag top check", reg) == "stages.top"
    for bad in ("recdag b nine", "python x.py", "recdag"):
        with pytest.raises(dag.DagError, match="not a `recdag` command"):
            dag.command_target(bad, reg, "s")


SYNTH_DVC = """\
# top comment
stages:
  one:
    foreach: ${items}     # fan-out
    do:
      cmd: recdag b one ${item}
      params:
        - stale.key
        - sec.${item}
      deps:
        - data/in/${item}
        - pipeline/gone.py        # stale code dep
        - pipeline               # a directory: not allowed
      outs:
        - data/out/${item}

  # the matrix stage
  two:
    matrix:
      x: [1, 2]
    cmd: recdag b two ${item.x}
    params:
      - other.yaml:
          - k
    deps:
      - stages/b/two.py
      - data/more
  top:
    cmd: recdag top
    deps:
      - stages/top.py
    outs:
      - out.txt
"""


def test_check_and_write_on_a_synthetic_dag(tmp_path, capsys):
    root = _tree(tmp_path, {
        "stages/b/__init__.py": DOC,
        "stages/b/one.py": 'PARAMS = ("seed", "sec.${item}")\nfrom pipeline import lib\n',
        "stages/b/two.py": 'PARAMS = ("two",)\n',
        "stages/top.py": "",
        "pipeline/lib.py": "",
        "pipeline/gone.py": "",
    })
    path = root / "dvc.yaml"
    path.write_text(SYNTH_DVC)
    d, drifts = dag.check(path)
    assert [s.name for s in d.stages] == ["one", "two", "top"]
    assert [str(x) for x in drifts] == [
        "one: directory dep pipeline (list the files it imports)",
        "one: missing dep pipeline/lib.py",
        "one: missing dep stages/b/one.py",
        "one: extra dep pipeline/gone.py",
        "one: missing param seed",
        "one: extra param stale.key",
        "two: missing param two",
    ]
    rc, out = _check(path, capsys)
    assert rc == 1 and "one: missing dep pipeline/lib.py\n" in out
    assert "dag check: 7 drifts in 2 of 3 stages" in out
    dag.write(path)
    text = path.read_text()
    assert dag.check(path)[1] == []
    data = yaml.safe_load(text)
    assert data["stages"]["one"]["do"]["deps"] == ["data/in/${item}", "pipeline/lib.py", "stages/b/one.py"]
    assert data["stages"]["one"]["do"]["params"] == ["seed", "sec.${item}"]           # PARAMS order
    assert data["stages"]["two"]["params"] == ["two", {"other.yaml": ["k"]}]         # dict form kept
    assert data["stages"]["two"]["deps"] == ["data/more", "stages/b/two.py"]         # data deps first
    for comment in ("# top comment", "# fan-out", "# the matrix stage"):
        assert comment in text
    assert "\n\n  # the matrix stage\n  two:\n" in text
    assert "stale code dep" not in text                 # its dep went, so did its comment


def test_params_key_added_and_removed(tmp_path):
    root = _tree(tmp_path, {"stages/top.py": 'PARAMS = ("seed",)\n', "stages/b/__init__.py": DOC,
                            "stages/b/one.py": "", "stages/b/two.py": ""})
    path = root / "dvc.yaml"
    path.write_text("stages:\n  a:\n    cmd: recdag top\n    deps:\n    - stages/top.py\n"
                    "  b:\n    cmd: recdag b one\n    params:\n    - old\n    deps:\n    - stages/b/one.py\n")
    assert dag.write(path) == ["a: added param seed", "b: removed param old"]
    assert path.read_text() == ("stages:\n  a:\n    cmd: recdag top\n    params:\n    - seed\n    deps:\n"
                                "    - stages/top.py\n  b:\n    cmd: recdag b one\n    deps:\n"
                                "    - stages/b/one.py\n")


COMMENTED_DVC = """\
stages:
  a:
    cmd: recdag top
    params:
      - seed    # the seed
      - old
    deps:
      - data/x  # data
      - stages/gone.py

  # heading of b
  b:
    cmd: recdag b one
    params:
      - old

  # heading of c
  c:
    cmd: recdag b two
    deps:
      - stages/b/two.py  # mine
      - stages/b/old.py
    params:
      - gone

  # heading of d
  d:
    cmd: recdag b two
"""


def test_write_moves_comments_with_their_place(tmp_path):
    """The blank line and heading comment under a stage stay there whichever list now ends the stage; an
    item's own comment stays with the item."""
    root = _tree(tmp_path, {"stages/top.py": 'PARAMS = ("seed",)\n', "stages/b/__init__.py": DOC,
                            "stages/b/one.py": "", "stages/b/two.py": "", "stages/b/old.py": ""})
    path = root / "dvc.yaml"
    path.write_text(COMMENTED_DVC)
    dag.write(path)
    assert path.read_text() == """\
stages:
  a:
    cmd: recdag top
    params:
      - seed    # the seed
    deps:
      - data/x  # data
      - stages/top.py

  # heading of b
  b:
    cmd: recdag b one
    deps:
      - stages/b/one.py

  # heading of c
  c:
    cmd: recdag b two
    deps:
      - stages/b/two.py  # mine

  # heading of d
  d:
    cmd: recdag b two
    deps:
      - stages/b/two.py
"""
