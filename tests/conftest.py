"""Shared pytest fixtures. Add new fixtures in their own delimited block."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# --- data: the real data folder (shared_data_dir) -----------------------------------------
# The real files live outside the repository, in <project root>/../shared/data, or wherever
# MOME_DATA_DIR points. Missing data fails in CI (env CI set) and skips elsewhere.
WORKPLACE_DATA_DIR = Path(__file__).parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """The folder holding census-income/ and aliexpress-sample/ (MOME_DATA_DIR or ../shared/data)."""
    env = os.environ.get("MOME_DATA_DIR", "").strip()
    path = Path(env).expanduser() if env else WORKPLACE_DATA_DIR
    if not path.is_dir():
        message = (
            f"real data folder {path} not found; set MOME_DATA_DIR to the folder holding "
            "census-income/census-income.test.gz and aliexpress-sample/"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


# --- end data ------------------------------------------------------------------------------


# --- models and training: tiny synthetic data, a 2-layer E=3 model, tiny budgets ----------
# Imports stay inside the fixtures so that collecting the data tests does not import torch.
TINY_ROWS = 3_000  # 1800 train / 600 validation / 600 test rows
TINY_SEED = 0


@pytest.fixture(scope="session")
def tiny_splits():
    """MMoE synthetic data (2 tasks, 4 categorical fields, 32 numericals), 3000 rows."""
    from mome_edge.data import make_mmoe_synthetic

    return make_mmoe_synthetic(n_rows=TINY_ROWS, seed=TINY_SEED)


@pytest.fixture(scope="session")
def tiny_dataset_ref():
    """A DatasetRef that reloads exactly `tiny_splits`."""
    from mome_edge.runs import DatasetRef

    return DatasetRef(name="synthetic", seed=TINY_SEED, synthetic_rows=TINY_ROWS)


@pytest.fixture(scope="session")
def tiny_model_config():
    """A 2-layer (32, 16) MoME with E=3 experts, 4-wide embeddings and one 8-wide tower layer."""
    from mome_edge.config import ModelConfig

    return ModelConfig(kind="mome", hidden=(32, 16), experts=3, embedding_dim=4, tower_hidden=(8,))


@pytest.fixture(scope="session")
def tiny_train_config():
    """5 MoME epochs: 1 neuron masking, 3 expert masking, 1 hardening; batch 256."""
    from mome_edge.config import TrainConfig

    return TrainConfig(epochs=5, neuron_epochs=1, harden_epochs=1, batch_size=256, lr=1e-2, seed=0)


# --- end models and training ---------------------------------------------------------------


# --- compile: tiny trained runs and their artifacts (issue 3) -------------------------------
@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_splits, tiny_dataset_ref, tiny_model_config, tiny_train_config):
    """kind -> run folder of a finished tiny run (trained once per session, on first use)."""
    import dataclasses

    from mome_edge.train.loop import train

    root = tmp_path_factory.mktemp("compile-runs")
    runs: dict = {}

    def make(kind: str = "mome"):
        if kind not in runs:
            config = dataclasses.replace(tiny_model_config, kind=kind)
            train(run_dir=root / kind, data=tiny_splits, model_config=config, train_config=tiny_train_config,
                  dataset=tiny_dataset_ref, progress=False)
            runs[kind] = root / kind
        return runs[kind]

    return make


@pytest.fixture(scope="session")
def tiny_artifact(tmp_path_factory, tiny_run):
    """(kind, weights) -> artifact file compiled from `tiny_run(kind)` (once per session)."""
    from mome_edge.artifact.writer import write_artifact
    from mome_edge.compile.compiler import compile_run

    root = tmp_path_factory.mktemp("compile-artifacts")
    files: dict = {}

    def make(kind: str = "mome", weights: str = "fp32"):
        if (kind, weights) not in files:
            path = root / f"{kind}-{weights}.mome"
            write_artifact(path, compile_run(tiny_run(kind)), weights=weights)
            files[kind, weights] = path
        return files[kind, weights]

    return make


# --- end compile ---------------------------------------------------------------------------
