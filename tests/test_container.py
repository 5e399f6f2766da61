"""Apptainer cannot run here: the definition file is linted (spython parses it), and the way the scripts call
the image (binds, --nv, the site file) is checked with a stand-in `apptainer` that records its arguments and
runs the command on the host."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import EXAMPLES, MODEL_DIR, ROOT, need

BIN = Path(sys.executable).parent
# the image's own directories, never bound (slurm/common.sh)
SYSTEM = {"/", "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/opt", "/proc", "/root",
          "/run", "/sbin", "/srv", "/sys", "/usr", "/var"}


def _recipe():
    recipe_mod = pytest.importorskip("spython.main.parse.parsers", reason="spython not installed")
    recipes = recipe_mod.SingularityParser(str(ROOT / "Singularity.def")).recipe
    return recipes[next(iter(recipes))] if isinstance(recipes, dict) else recipes


def test_singularity_def_has_the_required_sections():
    recipe = _recipe()
    assert any("pip install" in line for line in recipe.install)
    assert any("download_model" in line for line in recipe.install)  # model baked in, checksum-verified
    assert "gapseek" in recipe.cmd or "gapseek" in str(recipe.entrypoint)
    text = (ROOT / "Singularity.def").read_text()
    assert "%test" in text and "gapseek demo" in text


def test_singularity_def_installs_exactly_the_lock():
    recipe = _recipe()
    # a plain Python 3.11 base: the lock's torch (a CUDA build on PyPI) is the only torch in the image
    assert recipe.fromHeader.startswith("python:3.11"), recipe.fromHeader
    files = [line.split()[0] for line in recipe.files]
    assert "requirements.lock" in files and "constraints.txt" not in files
    installs = [line for line in recipe.install if "pip install" in line]
    assert any("-r /opt/gapseek/requirements.lock" in line for line in installs), installs
    # gapseek itself adds no package (and is built with the lock's setuptools)
    own = [line for line in installs if line.rstrip().endswith("/opt/gapseek")]
    assert own and all("--no-deps" in line and "--no-build-isolation" in line for line in own), installs
    lock = next(i for i, line in enumerate(installs) if "requirements.lock" in line)
    assert lock < installs.index(own[0])  # the lock first, then gapseek
    assert "PYTHONNOUSERSITE=1" in recipe.environ  # the host's ~/.local must not shadow the image's packages
    assert "constraints" not in (ROOT / "Singularity.def").read_text()
    assert (ROOT / "requirements.lock").is_file()


# --- how the scripts run the image ---------------------------------------------------------------------------

FAKE = """#!/bin/bash
# stand-in for apptainer: records its arguments, then runs the command after the image on the host
printf '%s\\n' "$*" >> "$FAKE_APPTAINER_LOG"
shift  # exec
while [[ $1 == -* ]]; do case $1 in --bind|-B|--pwd) shift 2 ;; *) shift ;; esac; done
shift  # the image
exec "$@"
"""


def _top(p: Path | str) -> str:
    return "/" + Path(p).absolute().parts[1]


@pytest.fixture
def fake(tmp_path):
    if shutil.which("bash") is None:
        pytest.skip("bash missing")
    bindir = tmp_path / "fakebin"
    bindir.mkdir()
    (bindir / "apptainer").write_text(FAKE)
    (bindir / "apptainer").chmod(0o755)
    image = tmp_path / "gapseek.sif"
    image.write_bytes(b"")
    log = tmp_path / "apptainer.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GAPSEEK_", "SLURM_"))}
    env.update(PATH=f"{bindir}{os.pathsep}{BIN}{os.pathsep}{os.environ.get('PATH', '')}", GAPSEEK_IMAGE=str(image),
               GAPSEEK_SITE=os.devnull, FAKE_APPTAINER_LOG=str(log))
    return env, log


def _calls(log: Path) -> list[str]:
    return [line for line in log.read_text().splitlines() if line.startswith("exec ")]


def _binds(call: str) -> set[str]:
    words = call.split()
    return set(words[words.index("--bind") + 1].split(",")) if "--bind" in words else set()


def _index(store: Path, env) -> None:
    subprocess.run([str(BIN / "gapseek"), "index", str(EXAMPLES), "--out", str(store)], env=env, check=True,
                   capture_output=True)


def test_run_sh_binds_the_filesystems_of_the_paths_and_of_a_stores_inputs(fake, tmp_path):
    env, log = fake
    store = tmp_path / "store"
    _index(store, env)
    work = tmp_path / "work"
    work.mkdir()
    res = subprocess.run(["bash", str(ROOT / "container" / "run.sh"), "status", str(store)], env=env, cwd=work,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 3, res.stderr  # status: 3 = some shards are not complete (here all are missing)
    assert "missing" in res.stdout  # gapseek ran (here on the host) and read the store
    run = _calls(log)[-1]
    assert run.startswith("exec --nv ") and f" {env['GAPSEEK_IMAGE']} gapseek status {store}" in run
    expected = {_top(work), _top(store), _top(EXAMPLES)} - SYSTEM  # the inputs listed in the manifest too
    assert _binds(run) == expected, run


def test_gapseek_bind_is_taken_as_given_and_system_directories_are_never_bound(fake, tmp_path):
    env, log = fake
    res = subprocess.run(["bash", str(ROOT / "container" / "run.sh"), "--version"],
                         env=dict(env, GAPSEEK_BIND="/data:/mnt/data:ro"), cwd=tmp_path, capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert _binds(_calls(log)[-1]) == {"/data:/mnt/data:ro"}
    res = subprocess.run(["bash", str(ROOT / "container" / "run.sh"), "--version", "/usr/share/cifs"], env=env,
                         cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert "not binding /usr/share/cifs" in res.stderr and "GAPSEEK_BIND" in res.stderr
    assert "/usr" not in _binds(_calls(log)[-1])


def test_site_file_sets_up_the_image_under_set_u(fake, tmp_path):
    env, log = fake
    site = tmp_path / "site.sh"
    # like `module load` / `conda activate`: reads an unset variable; the scripts run under set -u
    site.write_text(f'[ -z "$SOME_UNSET_VARIABLE" ] && export GAPSEEK_IMAGE={env["GAPSEEK_IMAGE"]}\n')
    env = {k: v for k, v in env.items() if k != "GAPSEEK_IMAGE"}
    res = subprocess.run(["bash", str(ROOT / "container" / "run.sh"), "--version"],
                         env=dict(env, GAPSEEK_SITE=str(site)), cwd=tmp_path, capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0 and "gapseek" in res.stdout, res.stderr
    assert _calls(log)
    res = subprocess.run(["bash", str(ROOT / "container" / "run.sh"), "--version"],
                         env=dict(env, GAPSEEK_SITE=str(tmp_path / "nope.sh")), cwd=tmp_path, capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 1 and "GAPSEEK_SITE" in res.stderr


def test_featurize_sbatch_runs_the_image_with_gpus_and_the_inputs_bound(fake, tmp_path):
    """The array script, run by hand (no Slurm): every shard in turn, through the image."""
    env, log = fake
    env = dict(env, GAPSEEK_MODEL_DIR=str(need(MODEL_DIR)))
    store = tmp_path / "store"
    _index(store, env)
    work = tmp_path / "work"
    work.mkdir()
    res = subprocess.run(["bash", str(ROOT / "slurm" / "featurize.sbatch"), str(store)], env=env, cwd=work,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "== gapseek featurize" in res.stdout and "shard 0:" in res.stdout, res.stdout
    run = [c for c in _calls(log) if " gapseek featurize " in c]
    assert len(run) == 1 and run[0].startswith("exec --nv ")
    assert _binds(run[0]) == {_top(work), _top(store), _top(EXAMPLES)} - SYSTEM, run[0]
    assert (store / "shards" / "part-00000.h5").is_file()
