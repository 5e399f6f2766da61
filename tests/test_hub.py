"""Model resolution and the verified download, against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import functools
import http.server
import shutil
import threading

import pytest

from gapseek.errors import ChecksumError, ModelError
from gapseek.hub import PINNED, download_model, resolve_model


@pytest.fixture()
def mirror(tmp_path, model_dir):
    """Serve a directory laid out like the upstream repository; yields (base_url, root)."""
    root = tmp_path / "mirror"
    for name, pin in PINNED.items():
        dest = root / pin.url_path
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(model_dir / name, dest)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None  # type: ignore[method-assign]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()


def test_download_is_verified_and_cached(mirror, tmp_path, monkeypatch):
    url, _ = mirror
    monkeypatch.delenv("GAPSEEK_MODEL_DIR", raising=False)
    monkeypatch.setenv("GAPSEEK_CACHE_DIR", str(tmp_path / "cache"))
    files = resolve_model(None, base_url=url)
    assert files.source == "cache"
    assert files.checkpoint.stat().st_size > 100_000
    # a second resolution uses the cache: the server is not needed any more
    assert resolve_model(None, base_url="http://127.0.0.1:9").checkpoint == files.checkpoint


def test_truncated_download_is_rejected_and_never_cached(mirror, tmp_path):
    url, root = mirror
    ck = root / PINNED["band-gap.pth.tar"].url_path
    ck.write_bytes(ck.read_bytes()[:50_000])  # a partial file on the server
    target = tmp_path / "cache"
    with pytest.raises(ChecksumError, match="partial or corrupt"):
        download_model(target, base_url=url)
    assert not (target / "band-gap.pth.tar").exists()
    assert not list(target.glob("*.part"))


def test_unreachable_mirror_is_a_clear_error(tmp_path):
    with pytest.raises(ModelError, match="cannot download"):
        download_model(tmp_path / "c", base_url="http://127.0.0.1:9", timeout=2)


def test_resolution_order(model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("GAPSEEK_MODEL_DIR", str(model_dir))
    assert resolve_model(None).source == "GAPSEEK_MODEL_DIR"
    assert resolve_model(model_dir).source == "--model"
    assert resolve_model(model_dir / "band-gap.pth.tar").checkpoint == model_dir / "band-gap.pth.tar"
    monkeypatch.setenv("GAPSEEK_MODEL_DIR", str(tmp_path))
    with pytest.raises(ModelError, match="lacks band-gap.pth.tar"):
        resolve_model(None)
    with pytest.raises(ModelError, match="no such file"):
        resolve_model(tmp_path / "nothing-here")
