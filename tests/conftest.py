"""Shared test helpers: tiny models (random weights, no downloads) and the ../shared data folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests never reach the model hub: fail fast instead of waiting on network retries.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def require(condition: bool, reason: str) -> None:
    """Skip locally when a resource is missing; fail under CI, where everything must be present."""
    if condition:
        return
    if os.environ.get("CI"):
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture
def shared() -> Path:
    require(SHARED.is_dir(), f"{SHARED} (the shared data folder) is missing")
    return SHARED


def write_config(tmp_path: Path, text: str, name: str = "cfg.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def shared_path(*parts: str | Path) -> Path:
    """A path under ../shared: skip locally when it is missing, fail under CI."""
    path = SHARED.joinpath(*parts)
    require(path.exists(), f"{path} is missing (the shared data folder beside this checkout)")
    return path


def pytest_addoption(parser) -> None:
    parser.addoption(
        "--large", action="store_true", default=False, help="fault suite at full size (more kills, more fuzz)"
    )


@pytest.fixture
def large(request) -> bool:
    return bool(request.config.getoption("--large"))


@pytest.fixture(scope="session")
def smollm2_cache(tmp_path_factory) -> Path:
    """A fresh peftrun cache holding SmolLM2-135M converted from the installed wheel, once per test
    session (the conversion takes ~40 s; every real-model test shares it). Skips locally without
    the wheel; fails under CI, which installs it."""
    from peftrun import smollm2

    require(smollm2.installed_gguf() is not None, f"{smollm2.WHEEL} is not installed ({smollm2.INSTALL})")
    cache = tmp_path_factory.mktemp("peftrun-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PEFTRUN_CACHE", str(cache))
        smollm2.smollm2_folder()
    return cache


@pytest.fixture
def smollm2_env(smollm2_cache, monkeypatch) -> Path:
    """PEFTRUN_CACHE points at the session's converted SmolLM2 (for this test); the folder."""
    from peftrun import smollm2

    monkeypatch.setenv("PEFTRUN_CACHE", str(smollm2_cache))
    return smollm2_cache / smollm2.FOLDER
