"""`describe_artifact`: byte accounting, neurons kept, mask statistics, dense MMoE baseline."""

from __future__ import annotations

import numpy as np
import pytest

from compiled_factory import KINDS, make_compiled
from mome_edge.artifact.format import COMPONENTS
from mome_edge.artifact.reader import parse_artifact, read_artifact
from mome_edge.artifact.writer import write_artifact
from mome_edge.artifact.describe import dense_mmoe_bytes, describe_artifact, plot_artifact
from mome_edge.errors import ConfigError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("weights", ["fp32", "fp16", "int8"])
def test_components_add_up_to_the_file_size_exactly(kind: str, weights: str, tmp_path) -> None:
    path = tmp_path / "m.mome"
    write_artifact(path, make_compiled(kind, seed=2), weights=weights)
    report = describe_artifact(path)
    assert set(report.components) == set(COMPONENTS)
    assert sum(report.components.values()) == report.file_bytes == path.stat().st_size
    assert report.components["manifest"] > 0 and report.components["base_weights"] > 0
    assert (report.components["expert_masks"] > 0) == (kind == "mome")


def test_mask_statistics_match_numpy(tmp_path) -> None:
    model = make_compiled("mome", seed=7, experts=4, hidden=(16, 8))
    path = tmp_path / "m.mome"
    write_artifact(path, model)
    report = describe_artifact(path)
    for layer, densities in zip(model.layers, report.mask_density, strict=True):
        np.testing.assert_allclose(densities, layer.masks.mean(axis=(1, 2)))
    flat = np.concatenate([layer.masks.reshape(4, -1) for layer in model.layers], axis=1)  # (E, all weights)
    inter = (flat[:, None] & flat[None]).sum(-1)
    union = (flat[:, None] | flat[None]).sum(-1)
    np.testing.assert_allclose(report.overlap, inter / union)
    assert report.expert_weights == flat.size
    assert report.bits_per_expert_weight == pytest.approx(8 * report.components["expert_masks"] / flat.size)
    assert sum(report.mask_encodings.values()) == 4 * len(model.layers)


def test_dense_models_have_no_mask_statistics(tmp_path) -> None:
    path = tmp_path / "m.mome"
    write_artifact(path, make_compiled("mmoe"))
    report = describe_artifact(path)
    assert report.mask_density == () and report.overlap == () and report.bits_per_expert_weight is None
    with pytest.raises(ConfigError, match="mmoe artifact without expert masks; --plot needs a MoME artifact"):
        plot_artifact(report, tmp_path / "plot.png")


def test_dense_mmoe_bytes_equal_a_compiled_mmoe_of_the_same_config(tiny_artifact) -> None:
    """The formula against the real thing: the tiny MMoE run has the tiny MoME run's config."""
    mome = describe_artifact(tiny_artifact("mome", "fp32"))
    mmoe = read_artifact(tiny_artifact("mmoe", "fp32"))
    tensors = mmoe.file_bytes - mmoe.components()["manifest"] - mmoe.components()["indices"]
    assert mome.dense_mmoe_bytes == tensors
    assert describe_artifact(mmoe).dense_mmoe_bytes == tensors
    assert mome.ratio == pytest.approx(mome.dense_mmoe_bytes / mome.file_bytes)


def test_dense_mmoe_bytes_formula() -> None:
    # 2 fields of 3 ids x 2 dims, 1 numerical -> d0 = 5; one expert layer 5 -> 4; 2 experts; 1 task; no tower hidden
    params = 2 * 3 * 2 + 2 * (5 * 4 + 2 * 4) + 1 * 2 * 5 + 1 * 2 + 1 * (4 * 1 + 1)
    assert dense_mmoe_bytes(vocab_sizes=[3, 3], embedding_dim=2, numerical=1, hidden=[4], experts=2, tower_hidden=[], tasks=1) == 4 * params


def test_neurons_kept_against_nominal_sizes(tiny_artifact) -> None:
    report = describe_artifact(tiny_artifact("mome", "fp32"))
    rows = {n.name: (n.kept, n.nominal) for n in report.neurons}
    nominal_input = 4 * 4 + 32  # tiny config: 4 fields x 4 dims + 32 numericals
    assert rows["input (x0)"][1] == rows["layer 1 inputs"][1] == nominal_input
    assert rows["layer 1 inputs"][0] <= rows["input (x0)"][0] <= nominal_input
    assert rows["layer 1"][1] == 32 and rows["layer 2"] == (16, 16)  # the last layer is never pruned
    loaded = read_artifact(tiny_artifact("mome", "fp32"))
    assert rows["layer 1"][0] == loaded.model.layers[0].scale.shape[1]


def test_report_json_has_the_promised_keys(tiny_artifact) -> None:
    data = describe_artifact(tiny_artifact("mome", "int8")).to_json()
    for key in ("file_bytes", "components", "bits_per_expert_weight", "dense_mmoe_bytes", "ratio", "neurons",
                "mask_density", "overlap"):
        assert key in data
    assert data["weights"] == "int8" and data["source_run"] == "mome"


def test_plot_writes_a_png(tiny_artifact, tmp_path) -> None:
    out = tmp_path / "masks.png"
    plot_artifact(describe_artifact(tiny_artifact("mome", "fp32")), out)
    assert out.read_bytes()[:8] == PNG_MAGIC


def test_describe_accepts_a_loaded_artifact(tiny_artifact) -> None:
    path = tiny_artifact("mome", "fp16")
    loaded = parse_artifact(path.read_bytes())
    assert describe_artifact(loaded).components == describe_artifact(path).components
