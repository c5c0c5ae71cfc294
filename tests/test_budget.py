"""Size budgets (issue 11): SIZE parsing, every model kind lands in [0.85, 1.0] x SIZE after
`compile`, the bytes the run reports are the bytes compile writes, an unreachable budget
exits 2 having written nothing, and the default gate schedule does not depend on the number
of optimizer steps."""

from __future__ import annotations

import dataclasses
import json

import pytest

from mome_edge.budget import BUDGET_LOWER_FRACTION, parse_size
from mome_edge.errors import ConfigError

from cli_helpers import invoke

TINY_BUDGET = 20_000  # bytes: about 3/4 of the tiny MoME fully open, ~1/3 of the tiny MMoE
TINY_INT8_BUDGET = 17_000  # int8 manifests are larger (a scale entry per tensor): the smallest int8 MoME is ~14 KB
STEP_INVARIANCE_RATIO = 1.5  # issue 11: batch 8x smaller, compiled size within 1.5x


@pytest.mark.parametrize(
    ("text", "expected"),
    [("120000", 120_000), ("120KB", 120_000), ("1.5MB", 1_500_000), ("96KiB", 98_304), ("100kb", 100_000), ("2 MiB", 2 * 1024**2)],
)
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "KB", "12XB", "-5KB", "0", "1e5"])
def test_parse_size_refuses_what_is_not_a_size(text: str) -> None:
    with pytest.raises(ConfigError, match="--budget"):
        parse_size(text)


def _train_and_compile(tmp_path, splits, ref, model_config, train_config, weights: str = "fp32"):
    from mome_edge.compile.compiler import compile_to_file
    from mome_edge.train.loop import train

    result = train(run_dir=tmp_path / "run", data=splits, model_config=model_config, train_config=train_config, dataset=ref, progress=False)
    report = compile_to_file(tmp_path / "run", tmp_path / "model.mome", weights=weights)
    return result, report


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "weights"), [("mome", "fp32"), ("mome", "int8"), ("mmoe", "fp32"), ("ple", "fp32"),
                                               ("shared-bottom", "fp32"), ("single-task", "int8")])
def test_budget_is_met_after_compile(tmp_path, tiny_splits, tiny_dataset_ref, tiny_model_config, tiny_train_config, kind, weights) -> None:
    budget = TINY_BUDGET if weights == "fp32" else TINY_INT8_BUDGET
    model_config = dataclasses.replace(tiny_model_config, kind=kind)
    train_config = dataclasses.replace(tiny_train_config, budget_bytes=budget, budget_weights=weights)
    result, report = _train_and_compile(tmp_path, tiny_splits, tiny_dataset_ref, model_config, train_config, weights)
    assert BUDGET_LOWER_FRACTION * budget <= report.file_bytes <= budget, (kind, weights, report.file_bytes)
    summary = json.loads((result.run_dir / "summary.json").read_text())
    reported = summary["budget"]
    assert reported["achieved_bytes"] == report.file_bytes  # the run predicts compile's bytes exactly
    assert reported["components"] == report.components and reported["within_range"]
    assert reported["bytes"] == budget and reported["weights"] == weights


@pytest.mark.slow
def test_inspect_reports_the_budget(tmp_path, tiny_splits, tiny_dataset_ref, tiny_model_config, tiny_train_config) -> None:
    train_config = dataclasses.replace(tiny_train_config, budget_bytes=TINY_BUDGET)
    _, report = _train_and_compile(tmp_path, tiny_splits, tiny_dataset_ref, tiny_model_config, train_config)
    code, out, err = invoke(["inspect", str(report.path), "--json"])
    assert code == 0, err
    budget = json.loads(out)["budget"]
    assert budget["bytes"] == TINY_BUDGET and budget["achieved_bytes"] == report.file_bytes == budget["file_bytes"]
    code, out, err = invoke(["inspect", str(report.path)])
    assert code == 0 and "budget" in out and f"{TINY_BUDGET:,}" in out


def test_unreachable_budget_exits_2_and_writes_nothing(tmp_path) -> None:
    run_dir = tmp_path / "run"
    code, out, err = invoke(["train", "--model", "mome", "--dataset", "synthetic", "--synthetic-rows", "600", "--budget", "3KB",
                             "--out", str(run_dir), "--quiet"])
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "smallest" in lines[0], err
    assert not run_dir.exists()


def test_budget_weights_are_checked(tmp_path) -> None:
    code, _, err = invoke(["train", "--model", "mmoe", "--dataset", "synthetic", "--synthetic-rows", "600", "--budget", "30KB",
                           "--budget-weights", "int4", "--out", str(tmp_path / "run"), "--quiet"])
    assert code == 2 and err.startswith("error:") and "budget_weights" in err


@pytest.mark.slow
def test_compiled_size_does_not_depend_on_the_step_count(tmp_path, tiny_splits, tiny_dataset_ref, tiny_model_config, tiny_train_config) -> None:
    """The same flags with an 8x smaller batch (8x the steps): compiled sizes within 1.5x."""
    sizes = {}
    for batch in (256, 32):
        train_config = dataclasses.replace(tiny_train_config, batch_size=batch)
        _, report = _train_and_compile(tmp_path / str(batch), tiny_splits, tiny_dataset_ref, tiny_model_config, train_config)
        sizes[batch] = report.file_bytes
    assert max(sizes.values()) / min(sizes.values()) <= STEP_INVARIANCE_RATIO, sizes


@pytest.mark.parametrize("schedule, invariant", [("per-sample", True), ("per-step", False)])
def test_an_epoch_moves_a_weak_gate_as_far_at_any_batch_size(schedule: str, invariant: bool) -> None:
    """The mechanism behind step invariance, with the trainer's own optimizer and gate rate.

    64 gates get a weak closing signal (mean 0.01 per row) buried in per-row noise (std 1), so a
    batch of B rows gives mean 0.01 and noise 1/sqrt(B): the regime of the gates that decide the
    size. One epoch of 200,000 rows at batch 256 and at batch 2048: with the per-sample rate the
    gates move about as far (ratio <= STEP_INVARIANCE_RATIO); with the per-step rate (before
    issue 11) Adam's normalised steps make the 8x more steps move them ~sqrt(8) x further,
    which the tiny-data test above cannot show (its epochs are below the rate's cap)."""
    import math

    import torch

    from mome_edge.config import TrainConfig
    from mome_edge.train.gate_schedule import gate_step_rate

    rows, moved = 200_000, {}
    for batch in (256, 2048):
        rate = gate_step_rate(TrainConfig(batch_size=batch, gate_schedule=schedule), rows)
        gates = torch.zeros(64, requires_grad=True)
        optimizer = torch.optim.Adam([gates], lr=rate)  # as train/loop.py builds it (default betas)
        noise = torch.Generator().manual_seed(0)
        for _ in range(rows // batch):
            gates.grad = 0.01 + torch.randn(64, generator=noise) / math.sqrt(batch)  # (64,)
            optimizer.step()
        moved[batch] = float(-gates.detach().mean())
    ratio = max(moved.values()) / min(moved.values())
    assert min(moved.values()) > 0, moved
    assert (ratio <= STEP_INVARIANCE_RATIO) is invariant, (schedule, moved, ratio)


def _mome_at_switch(splits, model_config, *, seed: int = 0):
    """A budgeted-shape MoME (output gates on) in the neuron phase, gate values set by hand below."""
    import torch

    from mome_edge.train.model import MoME

    torch.manual_seed(seed)
    return MoME(dataclasses.replace(model_config, gate_outputs=True), splits.spec)


def _size_of(model, spec, keep) -> int:
    from mome_edge.compile.sizing import compiled_size, dense_equivalent

    return compiled_size(dense_equivalent(model, spec, keep), spec, weights="fp32", metadata={}).bytes


def test_the_neuron_switch_keeps_every_open_input_and_shrinks_hidden_widths(tiny_splits, tiny_model_config) -> None:
    """Inputs whose gate the neuron phase left open all stay; the hidden and output widths
    shrink (most open first) until the fully open model fits; closed inputs never come back.
    Only when the hidden floor cannot fit do inputs go too."""
    import torch

    from mome_edge.compile.sizing import NEURON_FLOOR, mome_neuron_keep

    model = _mome_at_switch(tiny_splits, tiny_model_config)
    spec = tiny_splits.spec
    mus = model.gate_mus()
    with torch.no_grad():
        generator = torch.Generator().manual_seed(1)
        for mu in mus:
            mu.copy_(torch.rand(mu.shape, generator=generator) * 0.9 + 0.05)  # open, distinct values
        mus[0][::3] = -0.2  # every third input closed by the neuron phase
    open_inputs = mus[0].detach() > 0
    everything = [torch.ones_like(mu, dtype=torch.bool) for mu in mus]
    full = _size_of(model, spec, [open_inputs] + everything[1:])
    floor_only = [open_inputs] + [torch.zeros_like(mu, dtype=torch.bool) for mu in mus[1:]]
    for i in range(1, len(floor_only)):
        floor_only[i][torch.topk(mus[i].detach(), NEURON_FLOOR).indices] = True
    smallest_with_inputs = _size_of(model, spec, floor_only)
    target = (full + smallest_with_inputs) // 2
    keep, size = mome_neuron_keep(model, spec, target_bytes=target, weights="fp32", metadata={})
    assert size <= target
    assert torch.equal(keep[0], open_inputs), "every open input stays, no closed one comes back"
    for k, mu in zip(keep[1:], mus[1:]):
        assert NEURON_FLOOR <= int(k.sum()) < mu.numel()
        kept, dropped = mu.detach()[k], mu.detach()[~k]
        assert kept.min() >= dropped.max(), "the most open neurons of each layer stay"
    # below what every open input needs even at the floor: inputs are ranked with the same share
    keep, size = mome_neuron_keep(model, spec, target_bytes=smallest_with_inputs - 1, weights="fp32", metadata={})
    assert size < smallest_with_inputs and int(keep[0].sum()) < int(open_inputs.sum())
    assert not bool((keep[0] & ~open_inputs).any()), "a closed input never comes back"


def test_hardening_opens_the_most_open_closed_gates_when_the_trained_masks_are_too_small(tiny_splits, tiny_model_config) -> None:
    """Carved masks drop base weights no expert uses, so a file sized for the fully open model
    can come out below the range: the hardening switch then opens closed expert gates, most
    open first, until the file lands in the range, and keeps every gate that was open."""
    import torch

    from mome_edge.compile.sizing import compiled_size, trim_expert_masks
    from mome_edge.train.phases import remove_closed_neurons, start_hardening

    model = _mome_at_switch(tiny_splits, tiny_model_config)
    spec = tiny_splits.spec
    with torch.no_grad():
        for mu in model.gate_mus():
            mu.fill_(0.8)
    model, _ = remove_closed_neurons(model, spec)
    with torch.no_grad():
        generator = torch.Generator().manual_seed(2)
        for layer in model.base:
            layer.gate_mu.copy_(torch.rand(layer.gate_mu.shape, generator=generator) * 0.6 - 0.1)  # ~10 % open at 0.5
    natural = compiled_size(start_hardening(model, spec), spec, weights="fp32", metadata={}).bytes
    low, high = natural + 200, natural + 2000
    hardened, report = trim_expert_masks(model, spec, low_bytes=low, high_bytes=high, weights="fp32", metadata={})
    assert report["trimmed"] and report["natural_bytes"] == natural and low <= report["bytes"] <= high
    assert report["natural_density"] < report["density"] < 1.0
    assert compiled_size(hardened, spec, weights="fp32", metadata={}).bytes == report["bytes"]
    for before, after in zip(model.base, hardened.base):
        was_open = before.gate_mu.detach() > model.config.mask_threshold
        now_open = after.gate_mu.detach() > 0.5
        assert bool(now_open[was_open].all()), "a trained-open gate stays open"
        newly = before.gate_mu.detach()[now_open & ~was_open]
        still_closed = before.gate_mu.detach()[~now_open]
        if newly.numel() and still_closed.numel():
            assert newly.min() >= still_closed.max(), "the most open closed gates are opened first"
