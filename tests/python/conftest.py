"""Shared fixtures: where the build and the model are."""
import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def build_dir() -> pathlib.Path:
    return pathlib.Path(os.environ.get("QGATE_BUILD_DIR", ROOT / "build"))


@pytest.fixture(scope="session")
def model_path() -> pathlib.Path:
    p = pathlib.Path(os.environ.get("QGATE_MODEL_DIR", ROOT / "models")) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not p.exists():
        pytest.fail(f"model missing: {p} (run scripts/fetch_model.sh)")
    return p
