"""Model resolution and the verified download, against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import functools
import http.server
import shutil
import socket
import threading

import pytest
from conftest import EXAMPLES

from gapseek.cli import main
from gapseek.errors import ChecksumError, ModelError
from gapseek.fsutil import sha256_file
from gapseek.model.hub import PINNED, download_model, install_model, model_cache_dir, resolve_model


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


@pytest.fixture()
def user_cache(tmp_path, monkeypatch):
    """An empty user cache, no $GAPSEEK_MODEL_DIR, and a download URL where nothing listens (no network needed)."""
    monkeypatch.delenv("GAPSEEK_MODEL_DIR", raising=False)
    monkeypatch.setenv("GAPSEEK_CACHE_DIR", str(tmp_path / "user-cache"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("GAPSEEK_MODEL_URL", f"http://127.0.0.1:{port}")  # closed again: connection refused
    return model_cache_dir()


def test_fetch_from_a_local_copy_serves_every_later_command(model_dir, user_cache, capsys):
    assert main(["model", "fetch", "--from", str(model_dir)]) == 0
    assert str(user_cache) in capsys.readouterr().out
    for name, pin in PINNED.items():
        assert sha256_file(user_cache / name) == pin.sha256
    assert not list(user_cache.glob(".*"))  # no temporary files left
    # a later command, without --model or $GAPSEEK_MODEL_DIR and with no network, finds it in the cache
    assert main(["model", "info"]) == 0
    assert "(from cache)" in capsys.readouterr().out
    assert main(["model", "fetch", "--from", str(model_dir / "band-gap.pth.tar")]) == 0  # again: a no-op


def test_fetch_refuses_a_corrupt_copy_and_installs_nothing(tmp_path, user_cache, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "band-gap.pth.tar").write_bytes(b"not a checkpoint")
    (bad / "atom_init.json").write_text("{}")
    assert main(["model", "fetch", "--from", str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("gapseek: error: ") and "sha256" in err and "nothing installed" in err
    assert not (user_cache / "band-gap.pth.tar").exists() and not (user_cache / "atom_init.json").exists()
    assert main(["model", "fetch", "--from", str(tmp_path / "nowhere")]) == 1
    assert "no such directory" in capsys.readouterr().err


def test_one_corrupt_file_keeps_the_good_one_out_too(model_dir, tmp_path, user_cache):
    half = tmp_path / "half"
    half.mkdir()
    shutil.copy(model_dir / "band-gap.pth.tar", half)
    (half / "atom_init.json").write_bytes((model_dir / "atom_init.json").read_bytes()[:-10])  # truncated
    with pytest.raises(ChecksumError, match="atom_init.json has sha256"):
        install_model(half)
    assert not (user_cache / "band-gap.pth.tar").exists() and not (user_cache / "atom_init.json").exists()
    with pytest.raises(ModelError, match="no model"):
        resolve_model(None, download=False)


def test_fetch_url_from_a_mirror(mirror, user_cache, capsys):
    url, _ = mirror
    assert main(["model", "fetch", "--url", url]) == 0
    assert "downloaded" in capsys.readouterr().out
    assert resolve_model(None, download=False).checkpoint == user_cache / "band-gap.pth.tar"


def test_without_network_the_error_names_the_ways_out(tmp_path, user_cache, capsys):
    rc = main(["featurize", str(EXAMPLES / "Si.cif"), "--out", str(tmp_path / "s"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1 and "cannot download" in err and "Traceback" not in err
    for way in ("--model PATH", "GAPSEEK_MODEL_DIR=DIR", "gapseek model fetch --from DIR", "--url MIRROR"):
        assert way in err
    assert not (tmp_path / "s").exists()
    assert not (user_cache / "band-gap.pth.tar").exists() and not list(user_cache.glob(".*.part"))
