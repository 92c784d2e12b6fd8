"""What users install: the wheel ships every module of the source tree, and its entry point runs."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import hookctl

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built from this checkout the way pipx and `pip install .` build one."""
    # From a clean copy: setuptools reuses a checkout's build/ directory, whose leftovers from an
    # earlier build would hide a module that the packaging configuration leaves out.
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    junk = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "hookctl", src / "hookctl", ignore=junk)
    out = tmp_path_factory.mktemp("wheel")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(src)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr
    (built,) = out.glob("hookctl-*.whl")
    return built


def test_the_wheel_ships_every_module_of_the_source_tree(wheel: Path) -> None:
    source = {
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / "hookctl").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }
    assert source, "no source tree to compare with"
    shipped = {n for n in zipfile.ZipFile(wheel).namelist() if n.startswith("hookctl/")}
    assert not source - shipped, f"missing from the wheel: {sorted(source - shipped)}"


def test_the_wheel_declares_the_command_and_this_version(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    dist_info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
    archive = zipfile.ZipFile(wheel)
    entry_points = archive.read(f"{dist_info}/entry_points.txt").decode()
    metadata = archive.read(f"{dist_info}/METADATA").decode()
    assert "hookctl = hookctl.cli:main" in entry_points
    assert f"\nVersion: {hookctl.__version__}\n" in metadata


def test_version_and_module_entry_point_run(tmp_path: Path) -> None:
    # From another directory, so the checkout is not what `-m hookctl` finds first by accident.
    ran = subprocess.run(
        [sys.executable, "-m", "hookctl", "--version"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == f"hookctl {hookctl.__version__}"
