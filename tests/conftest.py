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
