"""The run folder: what `train` writes and what `evaluate` and `compile` read.

    RUN_DIR/run.json                     configs, data set reference, feature spec
    RUN_DIR/checkpoints/epoch-NNNN.safetensors   training state after each epoch (last 2 kept)
    RUN_DIR/metrics.json                 one record per epoch
    RUN_DIR/model.safetensors            the selected final model (what is evaluated and compiled)
    RUN_DIR/summary.json                 final validation/test metrics and phase reports
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mome_edge.config import ModelConfig, TrainConfig, config_from_json, config_to_json
from mome_edge.encoding import FeatureSpec
from mome_edge.contract import SPLITS
from mome_edge.errors import ArtifactError, ConfigError

RUN_FORMAT = "mome-edge-run"
RUN_VERSION = 1
RUN_FILE = "run.json"
MODEL_FILE = "model.safetensors"
METRICS_FILE = "metrics.json"
SUMMARY_FILE = "summary.json"
CHECKPOINT_DIR = "checkpoints"
RUN_FILES = (RUN_FILE, MODEL_FILE, METRICS_FILE, SUMMARY_FILE)  # what a finished run holds besides checkpoints/
PREPARED = "prepared"  # DatasetRef.name of shards written by `mome-edge prepare` (data_dir = their folder)


@dataclass(frozen=True, kw_only=True)
class DatasetRef:
    """How to load a run's data again, deterministically (same split, same encoders)."""

    name: str | None = None
    spec_path: str | None = None
    data_dir: str | None = None
    seed: int = 0
    task_group: str = "income-marital"
    max_rows: int | None = None
    synthetic_rows: int | None = None
    synthetic_correlation: float | None = None  # task correlation of "synthetic" (None: the generator's default)

    @classmethod
    def prepared(cls, folder: Path, *, seed: int = 0) -> "DatasetRef":
        """Shards written by `mome-edge prepare` into `folder` (checked to hold a prepared.json)."""
        if not (Path(folder) / "prepared.json").is_file():
            raise ConfigError(f"--prepared {folder} holds no prepared.json; run `mome-edge prepare ... --out {folder}` first")
        return cls(name=PREPARED, data_dir=str(Path(folder).resolve()), seed=seed)

    @property
    def is_prepared(self) -> bool:
        return self.name == PREPARED

    def open(self):  # -> TrainingData: streamed shards for prepared data, else in memory
        from mome_edge.train.training_data import InMemoryData, PreparedData

        if self.is_prepared:
            return PreparedData(str(self.data_dir))
        return InMemoryData(self.load())

    def load(self):  # -> DataSplits (import kept local: the data package is heavy)
        from mome_edge.data import load_dataset

        if self.is_prepared:
            from mome_edge.data.prepared import PreparedDataset

            prepared = PreparedDataset(str(self.data_dir))
            from mome_edge.data.types import DataSplits

            return DataSplits(**{split: prepared.load_split(split) for split in SPLITS})

        return load_dataset(
            self.name,
            spec_path=self.spec_path,
            data_dir=self.data_dir,
            seed=self.seed,
            task_group=self.task_group,
            max_rows=self.max_rows,
            synthetic_rows=self.synthetic_rows,
            synthetic_correlation=self.synthetic_correlation,
        )

    def describe(self) -> str:
        if self.is_prepared:
            return f"prepared {Path(str(self.data_dir)).name}"
        if self.synthetic_correlation is not None:
            return f"{self.name} (task correlation {self.synthetic_correlation:g})"
        return self.name or f"spec {self.spec_path}"


@dataclass(frozen=True, kw_only=True)
class RunInfo:
    model_config: ModelConfig
    train_config: TrainConfig
    dataset: DatasetRef
    feature_spec: FeatureSpec

    def to_json(self) -> dict[str, Any]:
        return {
            "format": RUN_FORMAT,
            "version": RUN_VERSION,
            "model_config": config_to_json(self.model_config),
            "train_config": config_to_json(self.train_config),
            "dataset": asdict(self.dataset),
            "feature_spec": self.feature_spec.to_json(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "RunInfo":
        if data.get("format") != RUN_FORMAT or data.get("version") != RUN_VERSION:
            raise ArtifactError(f"run.json has format {data.get('format')!r} v{data.get('version')!r}; expected {RUN_FORMAT} v{RUN_VERSION}")
        return cls(
            model_config=config_from_json(ModelConfig, data["model_config"]),
            train_config=config_from_json(TrainConfig, data["train_config"]),
            dataset=DatasetRef(**data["dataset"]),
            feature_spec=FeatureSpec.from_json(data["feature_spec"]),
        )


def read_run_info(run_dir: str | Path) -> RunInfo:
    path = Path(run_dir) / RUN_FILE
    if not path.is_file():
        raise ArtifactError(f"{run_dir} is not a run folder (no {RUN_FILE}); pass the --out folder of a `mome-edge train` run")
    try:
        return RunInfo.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
        raise ArtifactError(f"{path} is corrupt ({exc}); re-run training into a new folder") from exc


def checkpoint_paths(run_dir: str | Path) -> list[Path]:
    """Checkpoints, oldest first."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    return sorted(folder.glob("epoch-*.safetensors")) if folder.is_dir() else []


def check_out_folder(out: Path, *, resume: bool = True) -> None:
    """ConfigError unless the output folder `out` can be created (or reused) for --out.

    Checked before any data is read, so that a bad --out fails at once with one line. With
    resume=False a folder that already holds a training run is refused too.
    """
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a folder path (the folder is created)")
    ancestor = out.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ConfigError(f"--out {out}: {ancestor} is a file, so the folder cannot be created there; choose another --out folder")
    if not resume and (out / RUN_FILE).exists():
        raise ConfigError(f"{out} already holds a run; pass --resume to continue it, or choose another --out folder")


def check_output_beside_run(output: Path, run_dir: Path, *, example: str = "model.mome") -> None:
    """ConfigError unless `output` can be written without touching the run folder it is made from.

    The run folder is the input: an output must never replace the folder, one of its files, or
    land inside its checkpoints/ folder (which training prunes).
    """
    from mome_edge.runtime.predict import refuse_overwriting_inputs

    refuse_overwriting_inputs(output, {"RUN_DIR": run_dir, **{f"the run's {name}": run_dir / name for name in RUN_FILES}})
    if output.resolve().is_relative_to((run_dir / CHECKPOINT_DIR).resolve()):
        raise ConfigError(f"the output {output} is inside the run's {CHECKPOINT_DIR}/ folder; write it elsewhere, e.g. -o {example}")
    if output.is_dir():
        raise ConfigError(f"the output {output} is a folder; give a file path such as -o {output / example}")
