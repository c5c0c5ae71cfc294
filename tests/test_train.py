"""Training on tiny synthetic data: MoME's three phases and their reports, determinism, exact
resume (also across phase switches and from a corrupt newest checkpoint), refusal to
overwrite a run, pickle-free checkpoints, the baselines, and load_trained_model."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from mome_edge.train.checkpoint import META_KEY
from mome_edge.config import ModelConfig, TrainConfig
from mome_edge.errors import ConfigError
from mome_edge.train.model import MoME, Phase
from mome_edge.runs import CHECKPOINT_DIR, METRICS_FILE, MODEL_FILE, RUN_FILE, SUMMARY_FILE, checkpoint_paths
from mome_edge.train.loop import Trainer, load_trained_model, predict_proba, train

# metrics.json fields that measure wall time, not the computation
TIMING_FIELDS = ("seconds", "rows_per_s", "peak_rss_mb")
RESUME_ATOL = 1e-6  # resumed vs uninterrupted final tensors (the runs should even be bitwise equal)
HARDENING_CHANGE_TOL = 1e-12  # hardening_auc_change = test AUC after - before (a float subtraction)


def _train(
    run_dir: Path, splits, ref, model_config: ModelConfig, train_config: TrainConfig, *, resume: bool = False,
    stop_after_epoch: int | None = None,
):
    return train(
        run_dir=run_dir, data=splits, model_config=model_config, train_config=train_config, dataset=ref,
        resume=resume, progress=False, stop_after_epoch=stop_after_epoch,
    )


def _metrics_without_timing(run_dir: Path) -> list[dict]:
    records = json.loads((run_dir / METRICS_FILE).read_text())
    return [{k: v for k, v in r.items() if k not in TIMING_FIELDS} for r in records]


def _summary_without_timing(run_dir: Path) -> dict:
    summary = json.loads((run_dir / SUMMARY_FILE).read_text())
    summary.pop("seconds_per_epoch")
    return summary


def _assert_same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float = 0.0) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].shape == b[name].shape, name
        if atol == 0.0:
            assert torch.equal(a[name], b[name]), name
        else:
            torch.testing.assert_close(a[name], b[name], atol=atol, rtol=0, msg=name)


@pytest.fixture(scope="module")
def mome_run(tmp_path_factory, tiny_splits, tiny_dataset_ref, tiny_model_config, tiny_train_config):
    """One uninterrupted MoME run (5 epochs: 1 neuron, 3 expert masking, 1 hardening)."""
    run_dir = tmp_path_factory.mktemp("mome") / "run"
    result = _train(run_dir, tiny_splits, tiny_dataset_ref, tiny_model_config, tiny_train_config)
    return result


# --- MoME phases and reports -----------------------------------------------------------------


def test_mome_goes_through_all_three_phases(mome_run) -> None:
    records = json.loads((mome_run.run_dir / METRICS_FILE).read_text())
    phases = [r["phase"] for r in records]
    assert phases == [Phase.NEURON_MASKING.value] + [Phase.EXPERT_MASKING.value] * 3 + [Phase.HARDENING.value]
    assert [r["epoch"] for r in records] == [1, 2, 3, 4, 5]
    for record in records:
        assert set(record["validation"]) == {"task1", "task2"}
        assert math.isfinite(record["train_loss"])
    assert mome_run.summary["phase"] == Phase.HARDENING.value
    assert mome_run.summary["epochs_run"] == 5
    for name in (RUN_FILE, METRICS_FILE, MODEL_FILE, SUMMARY_FILE):
        assert (mome_run.run_dir / name).is_file(), name
    assert [p.name for p in checkpoint_paths(mome_run.run_dir)] == ["epoch-0004.safetensors", "epoch-0005.safetensors"]


def test_mome_summary_reports(mome_run, tiny_model_config) -> None:
    summary = json.loads((mome_run.run_dir / SUMMARY_FILE).read_text())
    assert summary == json.loads(json.dumps(mome_run.summary))
    pruning = summary["neuron_pruning"]
    assert pruning["nominal"] == [48, tiny_model_config.hidden[0]]
    assert all(0 <= k <= n for k, n in zip(pruning["kept"], pruning["nominal"]))
    assert 0.0 <= pruning["fractional_gates"] <= 1.0

    before = summary["before_hardening"]
    assert set(before) >= {"epoch", "validation", "test", "fractional_gates"}
    assert 2 <= before["epoch"] <= 4  # selected within the expert-masking phase
    assert 0.0 <= before["fractional_gates"] <= 1.0
    change = summary["hardening_auc_change"]
    assert set(change) == {"task1", "task2"}
    for task, delta in change.items():
        expected = summary["test"][task]["auc"] - before["test"][task]["auc"]
        assert delta == pytest.approx(expected, abs=HARDENING_CHANGE_TOL)


def test_final_model_masks_are_binary(mome_run) -> None:
    model = mome_run.model
    assert isinstance(model, MoME) and model.phase is Phase.HARDENING
    model.eval()
    for layer in model.base:
        values = set(torch.unique(layer.masks()).tolist())
        assert values <= {0.0, 1.0}
        assert not layer.gate_mu.requires_grad


def test_load_trained_model_equals_the_trained_one(mome_run, tiny_splits) -> None:
    model, info, summary = load_trained_model(mome_run.run_dir)
    assert not model.training and all(not m.training for m in model.modules())
    assert info.model_config == mome_run.model.config
    assert summary == json.loads(json.dumps(mome_run.summary))
    _assert_same_tensors(model.state_dict(), mome_run.model.state_dict())
    assert np.array_equal(predict_proba(model, tiny_splits.test), predict_proba(mome_run.model, tiny_splits.test))


# --- pickle-free files -------------------------------------------------------------------------


def _safetensors_header(path: Path) -> dict:
    raw = path.read_bytes()
    size = int.from_bytes(raw[:8], "little")
    return json.loads(raw[8 : 8 + size])


PICKLE_PREFIXES = {bytes([0x80, protocol]) for protocol in range(2, 6)}


def test_checkpoints_and_model_are_plain_safetensors(mome_run) -> None:
    files = [*checkpoint_paths(mome_run.run_dir), mome_run.run_dir / MODEL_FILE]
    assert len(files) == 3
    for path in files:
        raw = path.read_bytes()
        # neither pickle (PROTO opcode 0x80 + protocol 2..5) nor a torch zip; a bare 0x80 first byte
        # is legal here: it is the low byte of the safetensors header length (e.g. 0x2180)
        assert raw[:2] not in PICKLE_PREFIXES and not raw.startswith(b"PK")
        header = _safetensors_header(path)  # the safetensors layout: u64 size + JSON header
        meta = json.loads(header["__metadata__"][META_KEY])
        assert "structure" in meta
        tensors = load_file(str(path))  # safetensors only, no torch.load
        assert tensors
        with safe_open(str(path), framework="pt") as handle:
            assert set(handle.keys()) == set(tensors)
    newest = checkpoint_paths(mome_run.run_dir)[-1]
    checkpoint = load_file(str(newest))
    assert any(k.startswith("model.") for k in checkpoint)
    assert checkpoint["rng.torch"].dtype == torch.uint8
    with safe_open(str(newest), framework="pt") as handle:
        meta = json.loads(handle.metadata()[META_KEY])
    assert set(meta) >= {"structure", "optimizer", "state", "history"}
    assert meta["state"]["done"] is True and len(meta["history"]) == 5


# --- determinism --------------------------------------------------------------------------------


def test_same_seed_gives_identical_runs(tmp_path, mome_run, tiny_splits, tiny_dataset_ref, tiny_model_config, tiny_train_config) -> None:
    again = _train(tmp_path / "again", tiny_splits, tiny_dataset_ref, tiny_model_config, tiny_train_config)
    assert _metrics_without_timing(again.run_dir) == _metrics_without_timing(mome_run.run_dir)
    _assert_same_tensors(load_file(str(again.run_dir / MODEL_FILE)), load_file(str(mome_run.run_dir / MODEL_FILE)))
    assert _summary_without_timing(again.run_dir) == _summary_without_timing(mome_run.run_dir)


# --- resume ---------------------------------------------------------------------------------------


def _interrupt_after_epoch(monkeypatch: pytest.MonkeyPatch, stop_epoch: int) -> None:
    """Make the trainer stop (as if killed) right after epoch `stop_epoch` was checkpointed."""
    original = Trainer._checkpoint

    def checkpoint_then_stop(self, model, optimizer, state, best):
        original(self, model, optimizer, state, best)
        if state.epoch == stop_epoch:
            raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "_checkpoint", checkpoint_then_stop)


def _assert_same_run(resumed: Path, reference: Path) -> None:
    _assert_same_tensors(load_file(str(resumed / MODEL_FILE)), load_file(str(reference / MODEL_FILE)), atol=RESUME_ATOL)
    resumed_epochs = [r["epoch"] for r in _metrics_without_timing(resumed)]
    assert resumed_epochs == [r["epoch"] for r in _metrics_without_timing(reference)], f"{METRICS_FILE} holds epochs {resumed_epochs}"
    assert _metrics_without_timing(resumed) == _metrics_without_timing(reference)
    assert _summary_without_timing(resumed) == _summary_without_timing(reference)


@pytest.mark.parametrize(
    "stop_epoch", [1, 2, 4, 5],
    ids=["after-neuron-phase-switch", "mid-expert-masking", "after-hardening-switch", "after-last-epoch"],
)
def test_resume_equals_uninterrupted_run(
    stop_epoch: int, tmp_path, monkeypatch, mome_run, tiny_splits, tiny_dataset_ref, tiny_model_config, tiny_train_config
) -> None:
    run_dir = tmp_path / "run"
    with monkeypatch.context() as patch:
        _interrupt_after_epoch(patch, stop_epoch)
        with pytest.raises(KeyboardInterrupt):
            _train(run_dir, tiny_splits, tiny_dataset_ref, tiny_model_config, tiny_train_config)
    assert not (run_dir / MODEL_FILE).exists()
    newest = checkpoint_paths(run_dir)[-1]
    assert newest.name == f"epoch-{stop_epoch:04d}.safetensors"
    if stop_epoch == 2:  # mid-phase: the optimizer's moments are in the checkpoint, as tensors
        assert any(name.startswith("optim.") for name in load_file(str(newest)))

    _train(run_dir, tiny_splits, tiny_dataset_ref, tiny_model_config, tiny_train_config, resume=True)
    _assert_same_run(run_dir, mome_run.run_dir)


def test_stop_after_epoch_then_resume_equals_uninterrupted_run(
    tmp_path, mome_run, tiny_splits, tiny_dataset_ref, tiny_model_config, tiny_train_config
) -> None:
    run_dir = tmp_path / "run"
    stopped = _train(run_dir, tiny_splits, tiny_dataset_ref, tiny_model_config, tiny_train_config, stop_after_epoch=1)
    assert stopped.summary["stopped_after_epoch"] == 1 and stopped.summary["next_phase"] == Phase.EXPERT_MASKING.value
    assert [(r["epoch"], r["phase"]) for r in stopped.summary["history"]] == [(1, Phase.NEURON_MASKING.value)]
    assert not (run_dir / MODEL_FILE).exists() and checkpoint_paths(run_dir)[-1].name == "epoch-0001.safetensors"
    record = json.loads((run_dir / METRICS_FILE).read_text())[0]
    assert record["peak_rss_mb"] > 0 and record["rows_per_s"] > 0

    again = _train(run_dir, tiny_splits, tiny_dataset_ref, tiny_model_config, tiny_train_config, resume=True, stop_after_epoch=3)
    assert again.summary["stopped_after_epoch"] == 3
    # a stop already reached is refused (a resubmitted job must not "succeed" without training)
    before = (run_dir / METRICS_FILE).read_bytes()
    with pytest.raises(ConfigError, match="already stopped after epoch 3.*without --stop-after-epoch"):
        _train(run_dir, tiny_splits, tiny_dataset_ref, tiny_model_config, tiny_train_config, resume=True, stop_after_epoch=3)
    assert (run_dir / METRICS_FILE).read_bytes() == before
    _train(run_dir, tiny_splits, tiny_dataset_ref, tiny_model_config, tiny_train_config, resume=True)
    _assert_same_run(run_dir, mome_run.run_dir)


def test_stop_after_epoch_below_one_is_refused(tmp_path, tiny_splits, tiny_dataset_ref, tiny_model_config, tiny_train_config) -> None:
    with pytest.raises(ConfigError, match="stop_after_epoch=0 must be >= 1"):
        _train(tmp_path / "run", tiny_splits, tiny_dataset_ref, tiny_model_config, tiny_train_config, stop_after_epoch=0)
    assert not (tmp_path / "run").exists()


def test_corrupt_newest_checkpoint_falls_back_to_the_previous_one(
    tmp_path, monkeypatch, mome_run, tiny_splits, tiny_dataset_ref, tiny_model_config, tiny_train_config
) -> None:
    run_dir = tmp_path / "run"
    with monkeypatch.context() as patch:
        _interrupt_after_epoch(patch, 3)
        with pytest.raises(KeyboardInterrupt):
            _train(run_dir, tiny_splits, tiny_dataset_ref, tiny_model_config, tiny_train_config)
    newest = checkpoint_paths(run_dir)[-1]
    assert newest.name == "epoch-0003.safetensors"
    raw = newest.read_bytes()
    newest.write_bytes(raw[: len(raw) // 2])  # truncated, as by a full disk or a copy cut short

    with pytest.warns(UserWarning, match=r"epoch-0003\.safetensors is unusable.*falling back"):
        result = _train(run_dir, tiny_splits, tiny_dataset_ref, tiny_model_config, tiny_train_config, resume=True)
    assert result.summary["epochs_run"] == 5
    assert (run_dir / MODEL_FILE).is_file()
    # epoch 3 was replayed from the epoch-2 checkpoint: still the uninterrupted run
    _assert_same_run(run_dir, mome_run.run_dir)


def test_training_into_an_existing_run_without_resume_is_refused(
    mome_run, tiny_splits, tiny_dataset_ref, tiny_model_config, tiny_train_config
) -> None:
    before = {p: p.read_bytes() for p in mome_run.run_dir.rglob("*") if p.is_file()}
    with pytest.raises(ConfigError, match="already holds a run; pass --resume"):
        _train(mome_run.run_dir, tiny_splits, tiny_dataset_ref, tiny_model_config, tiny_train_config)
    assert {p: p.read_bytes() for p in mome_run.run_dir.rglob("*") if p.is_file()} == before


def test_resume_with_other_settings_is_refused(mome_run, tiny_splits, tiny_dataset_ref, tiny_model_config, tiny_train_config) -> None:
    other = dataclasses.replace(tiny_train_config, seed=1)
    with pytest.raises(ConfigError, match="holds a run with other settings"):
        _train(mome_run.run_dir, tiny_splits, tiny_dataset_ref, tiny_model_config, other, resume=True)


# --- baselines ----------------------------------------------------------------------------------

BASELINE_MIN_TEST_AUC = 0.6  # synthetic tasks; a 2-epoch baseline reaches ~0.7-0.8


@pytest.mark.parametrize("kind", ["mmoe", "ple", "shared-bottom", "single-task"])
def test_baselines_train_and_learn(kind: str, tmp_path, tiny_splits, tiny_dataset_ref, tiny_model_config, tiny_train_config) -> None:
    model_config = dataclasses.replace(tiny_model_config, kind=kind)
    train_config = dataclasses.replace(tiny_train_config, epochs=2)
    result = _train(tmp_path / kind, tiny_splits, tiny_dataset_ref, model_config, train_config)
    records = json.loads((result.run_dir / METRICS_FILE).read_text())
    assert [r["phase"] for r in records] == ["dense", "dense"]
    summary = json.loads((result.run_dir / SUMMARY_FILE).read_text())
    assert summary["model"] == kind and summary["epochs_run"] == 2
    assert "before_hardening" not in summary and "hardening_auc_change" not in summary
    for task, metrics in summary["test"].items():
        assert metrics["auc"] > BASELINE_MIN_TEST_AUC, (kind, task, metrics)
    loaded, _, _ = load_trained_model(result.run_dir)
    _assert_same_tensors(loaded.state_dict(), result.model.state_dict())
