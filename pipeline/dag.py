"""dvc.yaml is exact: each stage's code deps and params, checked against (and written from) its module.

For every stage of a ``dvc.yaml`` (plain, ``foreach``/``do`` and ``matrix`` stages) this module

* maps the stage's ``cmd`` (``recdag <branch> <command> ...`` or ``recdag <command> ...``) to the stage
  module through the ``COMMANDS`` registry of ``stages/cli.py`` (read statically, with :mod:`ast`);
* computes the module's **static import closure**: every ``import`` / ``from ... import`` anywhere in each
  file (module level and inside functions), resolved within the top-level packages ``pipeline`` and
  ``stages``, transitively (relative imports included). Package ``__init__.py`` files are not deps, which
  is sound only while they hold nothing but a docstring: a non-trivial one in a closure is an error;
* compares the closure with the stage's declared code deps (its ``deps:`` under ``pipeline/`` or
  ``stages/``; everything else is data and is left alone) and the stage's string ``params:`` entries with
  the module's module-level ``PARAMS`` tuple (read statically: the module is never imported), as sets,
  textually (``${item}`` templates compare as written);
* and rewrites dvc.yaml (:func:`write`) so that each stage's code deps are its closure (sorted, after its
  data deps) and its ``params:`` are ``PARAMS`` (in ``PARAMS`` order), through ruamel.yaml's round-trip
  mode (comments, stage order and everything else kept; the file is written atomically). It refuses, and
  writes nothing, when the file does not round-trip through ruamel.yaml unchanged or the result would
  not check clean.

A stage whose ``PARAMS`` names a ``${item}`` / ``${key}`` template but has no ``foreach``/``matrix`` is an
error (DVC could not resolve the key), as is a ``cmd`` that is not a registered ``recdag`` command.

DVC's own rule (a stage re-runs when a declared dep or param changes) makes this the difference between a
cached result and a stale one: see DVC's docs on ``deps``/``params`` (https://dvc.org/doc/user-guide/
project-structure/dvcyaml-files#stages). Pure functions of paths: no stage path, no params.yaml reading.
"""

from __future__ import annotations

import ast
import io
import itertools
import os
import re
import shlex
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.core.errors import RecdagError

CODE_PACKAGES = ("pipeline", "stages")
REGISTRY_FILE = "stages/cli.py"


class DagError(RecdagError):
    """dvc.yaml or the code cannot be checked (unknown command, unresolvable import, non-trivial __init__)."""


# ------------------------------------------------------------------------------------------ static reading


_TREES: dict[tuple[Path, int, int], ast.Module] = {}


def _parse(path: Path) -> ast.Module:
    """The syntax tree of ``path`` (cached while the file is unchanged)."""
    path = path.resolve()
    st = path.stat()
    key = (path, st.st_mtime_ns, st.st_size)
    tree = _TREES.get(key)
    if tree is None:
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        except SyntaxError as e:
            raise DagError(f"{path}:{e.lineno}: not valid Python ({e.msg})") from None
        _TREES[key] = tree
    return tree


def is_docstring_only(path: str | os.PathLike) -> bool:
    """True when the file holds nothing but (at most) a docstring."""
    body = _parse(Path(path)).body
    return not body or (len(body) == 1 and isinstance(body[0], ast.Expr)
                        and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str))


def _module_literal(path: Path, name: str):
    """(value, line) of the last module-level ``name = <literal>`` in ``path``; (None, None) if absent."""
    found = (None, None)
    for node in _parse(path).body:
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            try:
                found = (ast.literal_eval(value), node.lineno)
            except ValueError:
                raise DagError(f"{path}:{node.lineno}: {name} must be a literal (it is read without importing "
                               "the module)") from None
    return found


def read_registry(root: str | os.PathLike) -> dict[str, dict[str, str]]:
    """``COMMANDS`` of ``<root>/stages/cli.py`` (branch -> command -> "module:attr"; "" = top level)."""
    path = Path(root) / REGISTRY_FILE
    if not path.is_file():
        raise DagError(f"{path}: not found (the command registry)")
    commands, _ = _module_literal(path, "COMMANDS")
    if not isinstance(commands, dict):
        raise DagError(f"{path}: no literal COMMANDS dict")
    return commands


def module_params(root: str | os.PathLike, module: str) -> tuple[str, ...]:
    """The module-level ``PARAMS`` tuple of ``module`` (absent = empty), read with :mod:`ast`."""
    path = _module_file(Path(root), module)
    if path is None:
        raise DagError(f"module {module} not found under {root}")
    value, line = _module_literal(path, "PARAMS")
    if value is None:
        return ()
    if not isinstance(value, (tuple, list)) or not all(isinstance(v, str) for v in value):
        raise DagError(f"{path}:{line}: PARAMS must be a tuple of strings, got {value!r}")
    return tuple(value)


# ------------------------------------------------------------------------------------------ import closure


def _module_file(root: Path, module: str) -> Path | None:
    """``a/b/c.py``, else ``a/b/c/__init__.py``, else None (namespace packages: see :func:`_is_package`)."""
    parts = module.split(".")
    mod = root.joinpath(*parts[:-1], parts[-1] + ".py")
    if mod.is_file():
        return mod
    init = root.joinpath(*parts, "__init__.py")
    return init if init.is_file() else None


def _is_package(root: Path, module: str) -> bool:
    return root.joinpath(*module.split(".")).is_dir()


def _absolute(node: ast.ImportFrom, module: str, is_package: bool, where: str) -> str:
    if not node.level:
        return node.module or ""
    package = module.split(".") if is_package else module.split(".")[:-1]
    if node.level - 1 > len(package) - 1:
        raise DagError(f"{where}: relative import beyond the top-level package")
    base = package[:len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _import_nodes(body: list[ast.stmt]):
    """Every Import / ImportFrom statement in ``body``, at any depth (imports are statements, so only the
    statement lists of functions, classes, if/for/while/with/try/match blocks need visiting)."""
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
            continue
        for name in ("body", "orelse", "finalbody"):
            inner = getattr(node, name, None)
            if isinstance(inner, list):
                yield from _import_nodes(inner)
        for inner in getattr(node, "handlers", ()) or getattr(node, "cases", ()):
            yield from _import_nodes(inner.body)


def _imports(root: Path, rel: str) -> list[tuple[str, int]]:
    """(module, line) for every import of the file ``rel`` (posix, relative to ``root``), anywhere in it."""
    module = rel[:-3].replace("/", ".")
    is_package = rel.endswith("/__init__.py")
    if is_package:
        module = module[: -len(".__init__")]
    out: list[tuple[str, int]] = []
    for node in _import_nodes(_parse(root / rel).body):
        if isinstance(node, ast.Import):
            out += [(alias.name, node.lineno) for alias in node.names]
            continue
        base = _absolute(node, module, is_package, f"{rel}:{node.lineno}")
        for alias in node.names:
            sub = f"{base}.{alias.name}"
            if alias.name != "*" and (_module_file(root, sub) or _is_package(root, sub)):
                out.append((sub, node.lineno))          # `from a.b import c` with c a module
            else:
                out.append((base, node.lineno))         # ... with c a name in a.b
    return out


def import_closure(root: str | os.PathLike, module: str, memo: dict | None = None) -> tuple[str, ...]:
    """The files (posix, relative to ``root``, sorted) that ``module`` imports within ``pipeline``/``stages``,
    transitively, the module itself included. Docstring-only package ``__init__.py`` files are left out; a
    non-trivial one in the closure is a :class:`DagError`, as is an import that resolves to no file.
    ``memo`` (a dict, shared between calls on one unchanged tree) caches each file's imports."""
    root = Path(root)
    memo = {} if memo is None else memo
    if _module_file(root, module) is None:
        raise DagError(f"module {module} not found under {root}")
    files: set[str] = set()
    seen: set[str] = set()
    inits: dict[str, str] = {}                          # __init__.py -> who imports it (for the error)
    todo = [(module, f"the stage module {module}")]
    while todo:
        name, why = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        parts = name.split(".")
        for i in range(1, len(parts) + 1):              # importing a.b.c runs a/__init__, a/b/__init__ too
            init = root.joinpath(*parts[:i], "__init__.py")
            if init.is_file():
                inits.setdefault(init.relative_to(root).as_posix(), why)
        path = _module_file(root, name)
        if path is None:
            if _is_package(root, name):                 # namespace package: no file runs
                continue
            raise DagError(f"{why}: imports {name}, which is no module under {parts[0]}/")
        rel = path.relative_to(root).as_posix()
        if rel.endswith("/__init__.py"):
            continue
        files.add(rel)
        if rel not in memo:
            memo[rel] = [(t, line) for t, line in _imports(root, rel) if t.split(".")[0] in CODE_PACKAGES]
        todo += [(target, f"{rel}:{line}") for target, line in reversed(memo[rel])]
    for init, why in sorted(inits.items()):
        if not is_docstring_only(root / init):
            raise DagError(f"{init} holds code, not only a docstring (imported via {why}): package __init__.py "
                           "files are not declared as deps, so keep them docstring-only and move the code to a "
                           "module")
    return tuple(sorted(files))


# ------------------------------------------------------------------------------------------ dvc.yaml stages


def command_target(cmd: str, registry: dict[str, dict[str, str]], stage: str = "") -> str:
    """The stage module a ``recdag ...`` command runs."""
    try:
        argv = shlex.split(cmd)
    except ValueError as e:
        raise DagError(f"{stage}: cannot parse cmd {cmd!r}: {e}") from None
    if argv and argv[0] == "recdag":
        if len(argv) >= 3 and argv[1] and argv[1] in registry and argv[2] in registry[argv[1]]:
            return registry[argv[1]][argv[2]].partition(":")[0]
        if len(argv) >= 2 and argv[1] in registry.get("", {}):
            return registry[""][argv[1]].partition(":")[0]
    raise DagError(f"{stage}: cmd {cmd!r} is not a `recdag` command registered in {REGISTRY_FILE} COMMANDS")


def _find_root(dvc_dir: Path) -> Path:
    for d in (dvc_dir, *dvc_dir.parents):
        if (d / REGISTRY_FILE).is_file():
            return d
    raise DagError(f"no {REGISTRY_FILE} in {dvc_dir} or above it (the code root)")


@dataclass
class Stage:
    """One dvc.yaml stage entry (a ``foreach``/``matrix`` group counts once) and what its module needs."""

    name: str
    module: str
    definition: object                 # the (ruamel) mapping holding cmd / params / deps
    wdir: Path                         # where its paths are relative to
    code_deps: list[str]               # declared, relative to the code root
    dir_deps: list[str]                # declared directories under pipeline/ or stages/ (an error)
    params: list[str]                  # declared string params entries
    closure: tuple[str, ...]           # the module's import closure, relative to the code root
    wanted_params: tuple[str, ...]     # the module's PARAMS

    def drifts(self) -> list[Drift]:
        out = [Drift(self.name, "directory dep", d) for d in self.dir_deps]
        declared = set(self.code_deps)
        out += [Drift(self.name, "missing dep", f) for f in self.closure if f not in declared]
        out += [Drift(self.name, "extra dep", f) for f in sorted(declared - set(self.closure))]
        declared_p = set(self.params)
        out += [Drift(self.name, "missing param", k) for k in self.wanted_params if k not in declared_p]
        out += [Drift(self.name, "extra param", k) for k in sorted(declared_p - set(self.wanted_params))]
        return out


@dataclass(frozen=True)
class Drift:
    stage: str
    kind: str                          # missing dep | extra dep | directory dep | missing param | extra param
    what: str

    def __str__(self) -> str:
        if self.kind == "directory dep":
            return f"{self.stage}: directory dep {self.what} (list the files it imports)"
        return f"{self.stage}: {self.kind} {self.what}"


@dataclass
class Dag:
    path: Path
    root: Path                         # the code root (holds pipeline/ and stages/)
    data: object                       # the ruamel round-trip document
    stages: list[Stage] = field(default_factory=list)

    def drifts(self) -> list[Drift]:
        return [d for s in self.stages for d in s.drifts()]


def _yaml():
    from ruamel.yaml import YAML

    y = YAML()                         # round-trip mode
    y.preserve_quotes = True
    y.width = 4096
    return y


def _load(text: str, path: Path):
    from ruamel.yaml.error import YAMLError

    try:
        data = _yaml().load(text)
    except YAMLError as e:
        raise DagError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("stages"), dict):
        raise DagError(f"{path}: no `stages:` mapping")
    return data


_LOOP_VAR = re.compile(r"\$\{\s*(item|key)\b")     # dvc.yaml foreach / matrix variables


def _relative(path: str, frm: Path, to: Path) -> str:
    """``path`` (relative to ``frm``) made relative to ``to``, posix."""
    return Path(os.path.relpath(os.path.normpath(frm / path), to)).as_posix()


def _is_code(rel: str) -> bool:
    return rel.split("/", 1)[0] in CODE_PACKAGES


def load_dag(dvc_yaml: str | os.PathLike, text: str | None = None) -> Dag:
    """Parse ``dvc_yaml`` (or ``text`` as its content) and resolve every stage against the code."""
    path = Path(dvc_yaml)
    if text is None:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise DagError(f"{path}: not found") from None
    data = _load(text, path)
    dvc_dir = path.resolve().parent
    root = _find_root(dvc_dir)
    registry = read_registry(root)
    dag = Dag(path, root, data)
    memo: dict = {}
    for name, entry in data["stages"].items():
        if not isinstance(entry, dict):
            raise DagError(f"{path}: stage {name} is not a mapping")
        definition = entry["do"] if "foreach" in entry else entry
        if not isinstance(definition, dict) or "cmd" not in definition:
            raise DagError(f"{path}: stage {name} has no cmd")
        cmds = definition["cmd"] if isinstance(definition["cmd"], list) else [definition["cmd"]]
        modules = list(dict.fromkeys(command_target(str(c), registry, name) for c in cmds))
        wdir = dvc_dir / str(definition.get("wdir", entry.get("wdir", ".")))
        code, dirs = [], []
        for dep in definition.get("deps") or []:
            rel = _relative(str(dep), wdir, root)
            if _is_code(rel):
                (dirs if (root / rel).is_dir() else code).append(rel)
        params = [str(p) for p in definition.get("params") or [] if isinstance(p, str)]
        try:
            closure = tuple(sorted({f for m in modules for f in import_closure(root, m, memo)}))
            wanted = tuple(dict.fromkeys(k for m in modules for k in module_params(root, m)))
        except DagError as e:
            raise DagError(f"stage {name}: {e}") from None
        templated = [k for k in wanted if _LOOP_VAR.search(k)]
        if templated and "foreach" not in entry and "matrix" not in entry:
            raise DagError(f"stage {name}: PARAMS of {modules[0]} names {templated[0]!r}, but the stage has no "
                           "foreach/matrix to give it a value")
        dag.stages.append(Stage(str(name), ", ".join(modules), definition, wdir, code, dirs, params, closure,
                                wanted))
    return dag


def check(dvc_yaml: str | os.PathLike) -> tuple[Dag, list[Drift]]:
    """Every stage's drift between dvc.yaml and its module (empty: dvc.yaml is exact)."""
    dag = load_dag(dvc_yaml)
    return dag, dag.drifts()


# ------------------------------------------------------------------------------------------ writing


# ruamel.yaml keeps the comment after a line (and the blank / comment lines below it, up to the next token)
# on the node that ends there: ``seq.ca.items[i][0]`` for a list item, ``mapping.ca.items[key][2]`` for a
# scalar value. The part after the line's own comment (``tail``) belongs to the *place*, not the item: it
# moves to whatever ends there after the rewrite (the blank line and heading comment before the next stage).


def _last_slot(mapping, key):
    """(comments dict, index, position) of the comment after ``mapping[key]``'s last line, or None."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    value = mapping[key]
    if isinstance(value, CommentedSeq):
        if value and not isinstance(value[-1], (CommentedMap, CommentedSeq)):
            return value.ca.items, len(value) - 1, 0
        return None
    if isinstance(value, CommentedMap):
        return None
    return mapping.ca.items, key, 2


def _pop_tail(slot) -> tuple[str, object]:
    """Cut the lines below the slot's own end-of-line comment off it: (those lines, the comment's mark)."""
    if slot is None:
        return "", None
    items, k, pos = slot
    entry = items.get(k)
    tok = entry[pos] if entry else None
    if tok is None:
        return "", None
    first, _, rest = tok.value.partition("\n")
    if first.strip():
        tok.value = first + "\n"                    # `- item  # comment`: the comment stays on its line
    else:
        entry[pos] = None
    return rest, tok.start_mark


def _push_tail(slot, tail: str, mark) -> None:
    from ruamel.yaml.error import CommentMark
    from ruamel.yaml.tokens import CommentToken

    if not tail:
        return
    if slot is None:
        raise DagError("cannot place the comment lines that followed a rewritten list; edit dvc.yaml by hand")
    items, k, pos = slot
    entry = items.setdefault(k, [None, None, None, None])
    tok = entry[pos]
    value = (tok.value if tok is not None else "\n") + tail
    entry[pos] = CommentToken(value, tok.start_mark if tok is not None else (mark or CommentMark(0)), None)


def _replace_items(mapping, key: str, new: list) -> None:
    """Set the block list ``mapping[key]`` to ``new`` in place; an item kept keeps its end-of-line comment
    (and the comment lines under it, when it is not the last item)."""

    def ident(v):
        return v if isinstance(v, str) else id(v)

    seq = mapping[key]
    tail, mark = _pop_tail(_last_slot(mapping, key))
    own = {ident(seq[i]): c[0] for i, c in seq.ca.items.items() if c and c[0] is not None and i < len(seq)}
    del seq[:]
    seq.ca.items.clear()
    seq.extend(new)
    for i, v in enumerate(new):
        if ident(v) in own:
            seq.ca.items[i] = [own[ident(v)], None, None, None]
    _push_tail(_last_slot(mapping, key), tail, mark)


def _set_list(mapping, key: str, new: list, before: tuple[str, ...], stage: str) -> None:
    """``mapping[key] = new`` (block style), dropping the key when ``new`` is empty and adding it (before the
    first of ``before`` present, else last) when absent."""
    from ruamel.yaml.comments import CommentedSeq

    keys = list(mapping)
    value = mapping.get(key)
    if value is not None and not isinstance(value, CommentedSeq):
        raise DagError(f"{stage}: `{key}` is not a list")
    if value is not None and new:
        if value.fa.flow_style():
            value.fa.set_block_style()
        _replace_items(mapping, key, new)
    elif not new:
        if key in mapping:                           # drop it; what followed it now follows the key before
            tail, mark = _pop_tail(_last_slot(mapping, key)) if value else ("", None)
            i = keys.index(key)
            del mapping[key]
            _push_tail(_last_slot(mapping, keys[i - 1]) if i else None, tail, mark)
    elif key in mapping:                             # `key:` with no value
        mapping[key] = CommentedSeq(new)
    else:
        pos = next((keys.index(k) for k in before if k in keys), len(keys))
        tail, mark = _pop_tail(_last_slot(mapping, keys[-1])) if pos == len(keys) else ("", None)
        mapping.insert(pos, key, CommentedSeq(new))
        _push_tail(_last_slot(mapping, key), tail, mark)


_WROTE = {"missing dep": "added dep", "extra dep": "removed dep", "directory dep": "removed directory dep",
          "missing param": "added param", "extra param": "removed param"}


def _plan(stage: Stage, root: Path) -> tuple[list[str], list | None, list | None]:
    """(what changes, the new deps or None, the new params or None) of one stage."""
    d = stage.definition
    deps = list(d.get("deps") or [])
    data = [x for x in deps if not _is_code(_relative(str(x), stage.wdir, root))]
    new_deps = data + [_relative(f, root, stage.wdir) for f in stage.closure]
    entries = list(d.get("params") or [])
    new_params = list(stage.wanted_params) + [p for p in entries if not isinstance(p, str)]
    said = [f"{x.stage}: {_WROTE[x.kind]} {x.what}" for x in stage.drifts()]

    def same(a, b):
        return [x if isinstance(x, str) else id(x) for x in a] == [x if isinstance(x, str) else id(x) for x in b]

    deps_changed, params_changed = not same(deps, new_deps), not same(entries, new_params)
    if deps_changed and not any(" dep " in s for s in said):
        said.append(f"{stage.name}: code deps sorted")
    if params_changed and not any(" param " in s for s in said):
        said.append(f"{stage.name}: params put in PARAMS order")
    return said, (new_deps if deps_changed else None), (new_params if params_changed else None)


def _dump(data, indent: tuple[int, int, int]) -> str:
    y = _yaml()
    y.indent(mapping=indent[0], sequence=indent[1], offset=indent[2])
    buf = io.StringIO()
    y.dump(data, buf)
    return buf.getvalue()


def _indentation(text: str, path: Path) -> tuple[int, int, int]:
    """The (mapping, sequence, offset) indentation under which ``text`` round-trips unchanged (the dash
    of a block list ``offset`` columns in from its key, its item two columns after the dash)."""
    data = _load(text, path)
    for mapping, offset in itertools.product((2, 4, 3), (2, 0, 4, 1, 3)):
        if _dump(data, (mapping, offset + 2, offset)) == text:
            return mapping, offset + 2, offset
    raise DagError(f"{path}: does not round-trip unchanged through ruamel.yaml (mixed indentation?); fix the "
                   "drift `recdag dag check` lists by hand")


def write(dvc_yaml: str | os.PathLike) -> list[str]:
    """Rewrite ``dvc_yaml`` in place so that every stage is exact; returns what changed (empty: nothing,
    and the file is left untouched). The new text must load, keep the stage names and check clean before
    it replaces the old one (temp file + rename)."""
    path = Path(dvc_yaml)
    text = path.read_text(encoding="utf-8") if path.is_file() else None
    dag = load_dag(path, text)
    indent = _indentation(text, path)
    said: list[str] = []
    for stage in dag.stages:
        lines, new_deps, new_params = _plan(stage, dag.root)
        said += lines
        if new_params is not None:
            _set_list(stage.definition, "params", new_params, ("deps", "outs", "metrics", "plots"), stage.name)
        if new_deps is not None:
            _set_list(stage.definition, "deps", new_deps, ("outs", "metrics", "plots"), stage.name)
    if not said:
        return []
    new_text = _dump(dag.data, indent)
    after = load_dag(path, new_text)
    if [s.name for s in after.stages] != [s.name for s in dag.stages] or after.drifts():
        raise DagError(f"{path}: the rewritten file would not be exact ({after.drifts()[:3]}); nothing written")
    fd, tmp = tempfile.mkstemp(dir=path.resolve().parent, prefix=f".{path.name}.tmp-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(new_text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return said
