"""Getting the Avazu sources: the embedded synthetic world, reczoo's Hugging Face zips, or a local folder.

All three produce the same thing: ``<dest>/<source>/<split>.csv`` in reczoo's published layout (a local
``<split>.csv.gz`` is brought as it is; normalize reads it transparently), plus, for the synthetic world
only, ``<split>.oracle.csv`` sidecars and ``x1``/``x2`` ``alignment_truth.parquet`` (see
``pipeline.ctr.synthetic``), and a manifest with row-free facts (md5s of the split CSVs, origin).
A ``local`` or ``hf`` source brings only the split CSVs: no sidecar is ever needed.

md5 rules (``avazu.verify_md5``): reczoo publishes the md5 of each *extracted* CSV, so a split is always
hashed as CSV text: a local ``<split>.csv.gz`` is gunzipped while hashing (streaming; a truncated ``.gz`` is
a DataError naming it) and compared with the same published md5 - no need to decompress it first. With
``verify_md5: true`` a mismatch is a DataError naming the user's file (for ``hf``: the zip and its entry)
and saying that ``avazu.verify_md5: false`` accepts one's own copies; with ``false`` nothing is refused and
the manifest records ``"md5_verified": false`` beside the md5s computed.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import shutil
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Callable

from pipeline.core.errors import DataError
from pipeline.core.io import check_compression, is_gz, md5_file
from pipeline.ctr.schema import Layouts, split_file

log = logging.getLogger(__name__)

HF_REPOS = {"x1": "reczoo/Avazu_x1", "x2": "reczoo/Avazu_x2", "x4": "reczoo/Avazu_x4"}
HF_FILES = {"x1": "Avazu_x1.zip", "x2": "Avazu_x2.zip", "x4": "Avazu_x4.zip"}
# Published md5 sums of the extracted CSVs (reczoo/Datasets READMEs). Splits not listed are not published.
PUBLISHED_MD5 = {
    "x1": {"train": "f1114a07aea9e996842c71648e0f6395"},
    "x2": {"train": "c41d786896e2ebe68e08a022199f0ce8", "test": "e641ea94c72cdc99b49656d3404f536e"},
    "x4": {"train": "de3a27264cdabf66adf09df82328ccaa", "valid": "33232931d84d6452d3f956e936cab2c9",
           "test": "3ebb774a9ca74d05919b84a3d402986d"},
}

# (repo_id, filename, revision) -> local path of the downloaded file
Downloader = Callable[[str, str, str], str]


def hf_downloader(repo_id: str, filename: str, revision: str) -> str:
    """The real downloader: huggingface_hub's cached, resumable download of one dataset file."""
    from huggingface_hub import hf_hub_download

    return hf_hub_download(repo_id=repo_id, filename=filename, repo_type="dataset", revision=revision)


def csv_md5(path: Path, chunk: int = 1 << 22) -> str:
    """md5 of the CSV text in ``path``: of its bytes, or of the gunzipped bytes for a ``.gz`` (streaming);
    a truncated or corrupt gzip stream is a DataError naming the file."""
    if not is_gz(path):
        return md5_file(path)
    h = hashlib.md5()
    try:
        with gzip.open(path, "rb") as f:
            while block := f.read(chunk):
                h.update(block)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(path, f"not a readable gzip file ({e})", expected="a complete gzip stream of the "
                        "split's CSV (a truncated copy? fetch it again)") from None
    return h.hexdigest()


VERIFY_HINT = "or set avazu.verify_md5: false to accept your own copies (re-exports, subsets)"


def verify_md5(path: Path, source: str, split: str, *, verify: bool = True, shown=None,
               entry: str | None = None) -> str:
    """md5 of the CSV text in ``path`` (see :func:`csv_md5`); with ``verify``, a DataError if a published md5
    (``PUBLISHED_MD5``) exists and differs. The error names ``shown`` (the user's file; default ``path``)
    and, for a zip, the ``entry`` the CSV came from."""
    got = csv_md5(path)
    want = PUBLISHED_MD5.get(source, {}).get(split)
    if verify and want is not None and got != want:
        what = f"entry '{entry}': md5 mismatch" if entry else "md5 mismatch"
        gz = " (of the gunzipped text)" if is_gz(path) else ""
        raise DataError(shown if shown is not None else path, f"{what}: got {got}{gz}",
                        expected=f"the published md5 {want} of reczoo Avazu_{source} {split}.csv: a truncated "
                                 f"or different download, {VERIFY_HINT}")
    return got


def safe_extract_csvs(zip_path: Path, splits: tuple[str, ...], dest: Path,
                      entries: dict[str, str] | None = None) -> dict[str, Path]:
    """Extract ``<split>.csv`` for every split from ``zip_path`` into ``dest``; ``entries`` (if given)
    receives split -> the entry's name inside the archive.

    Every entry name is checked first: absolute names, ``..`` components or anything that would land
    outside ``dest`` are refused, and so is a corrupt archive (bad zip or CRC failure).
    """
    dest = dest.resolve()
    try:
        zf = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as e:
        raise DataError(zip_path, f"not a readable zip archive ({e})", expected="a zip file") from None
    found: dict[str, zipfile.ZipInfo] = {}
    with zf:
        for info in zf.infolist():
            name = info.filename
            pure = PurePosixPath(name.replace("\\", "/"))
            target = (dest / pure).resolve()
            if pure.is_absolute() or ".." in pure.parts or (target != dest and dest not in target.parents):
                raise DataError(zip_path, f"entry '{name}' escapes the target directory",
                                expected="relative entry names inside the archive")
            if info.is_dir() or pure.name.startswith("._"):
                continue
            for split in splits:
                if pure.name == f"{split}.csv":
                    if split in found:
                        raise DataError(zip_path, f"two entries named {split}.csv "
                                        f"('{found[split].filename}', '{name}')", expected="one per split")
                    found[split] = info
        missing = [s for s in splits if s not in found]
        if missing:
            raise DataError(zip_path, f"no {missing[0]}.csv inside the archive",
                            expected=f"entries {', '.join(s + '.csv' for s in splits)}")
        out = {}
        for split, info in found.items():
            target = dest / f"{split}.csv"
            try:
                with zf.open(info) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 22)
            except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError) as e:
                raise DataError(zip_path, f"corrupt entry '{info.filename}' ({e})",
                                expected="an intact zip archive") from None
            out[split] = target
            if entries is not None:
                entries[split] = info.filename
    return out


def fetch_hf(sources: list[str], layouts: Layouts, dest: Path, revision: str,
             downloader: Downloader | None = None, verify: bool = True) -> dict:
    """Download reczoo's zips (huggingface_hub cache), extract the split CSVs safely, verify md5s
    (``verify``: avazu.verify_md5, see the module docstring)."""
    downloader = downloader or hf_downloader
    manifest = {}
    for source in sources:
        zpath = Path(downloader(HF_REPOS[source], HF_FILES[source], revision))
        log.info("extracting %s", zpath)
        sdir = dest / source
        sdir.mkdir(parents=True, exist_ok=True)
        entries: dict[str, str] = {}
        files = safe_extract_csvs(zpath, layouts[source].splits, sdir, entries)
        md5 = {s: verify_md5(p, source, s, verify=verify, shown=zpath, entry=entries[s])
               for s, p in files.items()}
        manifest[source] = {"origin": f"hf://datasets/{HF_REPOS[source]}/{HF_FILES[source]}@{revision}",
                            "md5": md5, "md5_verified": verify}
    return manifest


def _find_source_dir(root: Path, source: str) -> Path:
    for name in (source, f"Avazu_{source}", f"avazu_{source}"):
        if (root / name).is_dir():
            return root / name
    raise DataError(root, f"no folder for source {source}",
                    expected=f"a sub-folder '{source}' or 'Avazu_{source}' with the reczoo CSVs")


def _local_split(sdir: Path, source: str, split: str) -> Path:
    """``sdir/<split>.csv`` or ``sdir/<split>.csv.gz`` (exactly one of them: normalize's rule)."""
    plain = split_file(sdir, split)
    if plain.name.endswith(".gz"):
        return plain
    if not plain.is_file():
        raise DataError(plain, "file not found",
                        expected=f"reczoo's {split}.csv (or {split}.csv.gz) for Avazu_{source}")
    return plain


def fetch_local(sources: list[str], layouts: Layouts, root: Path, dest: Path, verify: bool = True) -> dict:
    """Bring a user's reczoo folders into ``dest`` (hard link when possible, else copy); ``<split>.csv.gz``
    is brought as it is (normalize reads it gunzipping on the fly). md5s (``verify``: avazu.verify_md5):
    see the module docstring; the error names the user's file, never the copy under ``dest``. ``~`` in
    ``root`` is expanded."""
    root = Path(os.path.expanduser(str(root)))
    manifest = {}
    for source in sources:
        sdir = _find_source_dir(root, source)
        out = dest / source
        out.mkdir(parents=True, exist_ok=True)
        md5 = {}
        for split in layouts[source].splits:
            src = _local_split(sdir, source, split)
            check_compression(src)                      # gzip bytes under a .csv name: refused here already
            md5[split] = verify_md5(src, source, split, verify=verify)
            target = out / src.name
            try:
                os.link(src, target)
            except OSError:
                shutil.copyfile(src, target)
        manifest[source] = {"origin": str(sdir.resolve()), "md5": md5, "md5_verified": verify}
    return manifest


def fetch_synthetic(sources: list[str], layouts: Layouts, dest: Path, *, rows: int, seed: int,
                    mean_ctr: float, rank: int, temperature: float) -> dict:
    from pipeline.ctr.synthetic import generate_world, write_layouts

    world = generate_world(rows, seed, mean_ctr=mean_ctr, rank=rank, temperature=temperature,
                           fields=layouts.fields)
    summary = write_layouts(world, dest, layouts, sources, seed)
    return {s: {"origin": f"synthetic(rows={rows}, seed={seed})", "splits": summary[s],
                "md5": {split: md5_file(dest / s / f"{split}.csv") for split in summary[s]}}
            for s in sources}
