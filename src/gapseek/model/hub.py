"""Where the pretrained model comes from: ``--model PATH``, ``$GAPSEEK_MODEL_DIR``, the user cache, or a verified
download into that cache.

The user cache is ``$GAPSEEK_CACHE_DIR``, else ``$XDG_CACHE_HOME/gapseek``, else ``~/.cache/gapseek``. It is filled
either by a download from the upstream repository at a pinned commit (or a mirror), or from a local copy
(:func:`install_model`, ``gapseek model fetch --from DIR``). Either way each file is written to a temporary name,
its sha256 checked against :data:`PINNED`, and only then renamed into place, so a partial or corrupt file is
never cached.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from gapseek import config
from gapseek.errors import ChecksumError, ModelError
from gapseek.fsutil import sha256_file

__all__ = ["PINNED", "ModelFiles", "download_model", "install_model", "model_cache_dir", "resolve_model"]

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "band-gap.pth.tar"
ATOM_INIT_NAME = "atom_init.json"
UPSTREAM = "https://raw.githubusercontent.com/txie-93/cgcnn/f42ab233c4ee0c416879d6bc2d22a264418413ad"


@dataclass(frozen=True)
class _Pin:
    name: str
    url_path: str
    sha256: str


PINNED = {
    CHECKPOINT_NAME: _Pin(
        CHECKPOINT_NAME,
        "pre-trained/band-gap.pth.tar",
        "d269775b9be0995c046abed3dd6556c281a3eff7b2e1d73cf81b99e2a1d4aa6c",
    ),
    ATOM_INIT_NAME: _Pin(
        ATOM_INIT_NAME,
        "data/sample-regression/atom_init.json",
        "cb90bd2257dbf8cfc4e6b2b6d4348d4616e8e9680f1339b1461137032e0f1894",
    ),
}


@dataclass(frozen=True)
class ModelFiles:
    checkpoint: Path
    atom_init: Path
    source: str  # "--model", "GAPSEEK_MODEL_DIR" or "cache"


def model_cache_dir() -> Path:
    """Where the pinned model lives in the user cache (filled by a download or ``gapseek model fetch``)."""
    return config.cache_dir() / "models" / "cgcnn-band-gap"


def ways_out(target: Path | None = None) -> str:
    """The ways to give gapseek the model without a download, for error messages."""
    where = f" (cache: {target})" if target is not None else ""
    return ("give the model another way: --model PATH (the checkpoint, or a folder with "
            f"{CHECKPOINT_NAME} and {ATOM_INIT_NAME}), GAPSEEK_MODEL_DIR=DIR, or install it once into the user "
            f"cache with `gapseek model fetch --from DIR` (a local copy) or `gapseek model fetch --url MIRROR`{where}")


def _files_in(directory: Path, source: str) -> ModelFiles:
    ck, ai = directory / CHECKPOINT_NAME, directory / ATOM_INIT_NAME
    missing = [p.name for p in (ck, ai) if not p.is_file()]
    if missing:
        raise ModelError(
            f"{source}: {directory} lacks {', '.join(missing)} (it must hold {CHECKPOINT_NAME} and {ATOM_INIT_NAME})"
        )
    return ModelFiles(ck, ai, source)


def resolve_model(model: str | Path | None = None, download: bool = True, base_url: str | None = None) -> ModelFiles:
    """Find the model files: explicit path, then ``$GAPSEEK_MODEL_DIR``, then the cache (downloading)."""
    if model is not None:
        p = Path(model)
        if p.is_dir():
            return _files_in(p, "--model")
        if p.is_file():
            ai = p.parent / ATOM_INIT_NAME
            if not ai.is_file():
                raise ModelError(f"--model {p}: no {ATOM_INIT_NAME} beside the checkpoint")
            return ModelFiles(p, ai, "--model")
        raise ModelError(f"--model {p}: no such file or directory")
    env = config.model_dir()
    if env is not None:
        return _files_in(env, "GAPSEEK_MODEL_DIR")
    target = model_cache_dir()
    if all((target / n).is_file() for n in PINNED):
        return ModelFiles(target / CHECKPOINT_NAME, target / ATOM_INIT_NAME, "cache")
    if not download:
        raise ModelError(f"no model: {ways_out(target)}")
    download_model(target, base_url=base_url)
    return ModelFiles(target / CHECKPOINT_NAME, target / ATOM_INIT_NAME, "cache")


def _install(target: Path, pin: _Pin, fill: Callable[[BinaryIO], None], origin: str) -> Path:
    """Write one pinned file into ``target`` atomically: ``fill`` writes a temporary file there, whose sha256 must
    be ``pin.sha256`` before it is renamed into place. A file already there with that sha256 is kept."""
    final = target / pin.name
    if final.is_file() and sha256_file(final) == pin.sha256:
        return final
    fd, tmp_name = tempfile.mkstemp(prefix=f".{pin.name}.", suffix=".part", dir=target)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            fill(out)
        digest = sha256_file(tmp)
        if digest != pin.sha256:
            raise ChecksumError(f"{origin} has sha256 {digest}, expected {pin.sha256} (partial or corrupt, or not "
                                f"the published model); nothing cached")
        os.chmod(tmp, 0o644)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return final


def download_model(target: Path, base_url: str | None = None, timeout: float = 60.0) -> Path:
    """Download the pinned files into ``target`` (verified, atomic). ``base_url`` defaults to upstream
    (or ``$GAPSEEK_MODEL_URL``, e.g. a mirror reachable from compute nodes)."""
    base = (base_url or config.model_url() or UPSTREAM).rstrip("/")
    target.mkdir(parents=True, exist_ok=True)
    for pin in PINNED.values():
        url = f"{base}/{pin.url_path}"

        def fetch(out: BinaryIO, url: str = url) -> None:
            log.info("downloading %s", url)
            try:
                with urllib.request.urlopen(url, timeout=timeout) as resp:
                    while chunk := resp.read(1 << 20):
                        out.write(chunk)
            except (urllib.error.URLError, OSError) as exc:
                raise ModelError(f"cannot download {url}: {exc}; {ways_out(target)}") from None

        _install(target, pin, fetch, f"download of {url}")
    return target


def install_model(source: str | Path, target: Path | None = None) -> Path:
    """Copy the pinned model from a local folder (holding ``band-gap.pth.tar`` and ``atom_init.json``, or the
    checkpoint itself) into ``target`` (default: the user cache), so that every later command finds it there.
    Both files are verified against :data:`PINNED` before anything is copied, and each copy again before it is
    renamed into place: a wrong or corrupt copy is refused and nothing is installed."""
    src = Path(source)
    if src.is_file():
        src = src.parent
    if not src.is_dir():
        raise ModelError(f"--from {source}: no such directory")
    files = _files_in(src, "--from")
    paths = {CHECKPOINT_NAME: files.checkpoint, ATOM_INIT_NAME: files.atom_init}
    for name, pin in PINNED.items():
        digest = sha256_file(paths[name])
        if digest != pin.sha256:
            raise ChecksumError(f"{paths[name]} has sha256 {digest}, expected {pin.sha256} (corrupt, or not the "
                                "published band-gap model); nothing installed")
    target = model_cache_dir() if target is None else Path(target)
    target.mkdir(parents=True, exist_ok=True)
    for name, pin in PINNED.items():
        def copy(out: BinaryIO, path: Path = paths[name]) -> None:
            with open(path, "rb") as fh:
                shutil.copyfileobj(fh, out, 1 << 20)

        _install(target, pin, copy, f"the copy of {paths[name]}")
        log.info("installed %s from %s", name, paths[name])
    return target
