"""UCI Census-Income (KDD): the 42-column text files, two task groups, a seeded 60/20/20 split.

The file has no header, ", "-separated values and ``?`` for missing. The MMoE paper's task
groups are offered: "income-marital" (income > 50K, never married) and "education-marital"
(at least some college, never married). A task's label column is never a feature, nor is the
instance weight. Heavy-tailed money columns are log1p-transformed before standardising
(recorded in their NumericalScaler, so the runtime does the same).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mome_edge.data.frames import build_splits, positive_label
from mome_edge.data.paths import resolve_data_dir
from mome_edge.data.splits import SplitFractions, split_indices
from mome_edge.data.types import DataSplits
from mome_edge.errors import DataError

DATASET = "census-income"

# UCI census-income.names order
COLUMNS: tuple[str, ...] = (
    "age",
    "class_of_worker",
    "detailed_industry_recode",
    "detailed_occupation_recode",
    "education",
    "wage_per_hour",
    "enroll_in_edu_inst_last_wk",
    "marital_stat",
    "major_industry_code",
    "major_occupation_code",
    "race",
    "hispanic_origin",
    "sex",
    "member_of_a_labor_union",
    "reason_for_unemployment",
    "full_or_part_time_employment_stat",
    "capital_gains",
    "capital_losses",
    "dividends_from_stocks",
    "tax_filer_stat",
    "region_of_previous_residence",
    "state_of_previous_residence",
    "detailed_household_and_family_stat",
    "detailed_household_summary_in_household",
    "instance_weight",
    "migration_code_change_in_msa",
    "migration_code_change_in_reg",
    "migration_code_move_within_reg",
    "live_in_this_house_1_year_ago",
    "migration_prev_res_in_sunbelt",
    "num_persons_worked_for_employer",
    "family_members_under_18",
    "country_of_birth_father",
    "country_of_birth_mother",
    "country_of_birth_self",
    "citizenship",
    "own_business_or_self_employed",
    "fill_inc_questionnaire_for_veterans_admin",
    "veterans_benefits",
    "weeks_worked_in_year",
    "year",
    "income",
)
NUMERICAL: tuple[str, ...] = (
    "age",
    "wage_per_hour",
    "capital_gains",
    "capital_losses",
    "dividends_from_stocks",
    "num_persons_worked_for_employer",
    "weeks_worked_in_year",
)
LOG1P: frozenset[str] = frozenset({"wage_per_hour", "capital_gains", "capital_losses", "dividends_from_stocks"})
NEVER_FEATURES: frozenset[str] = frozenset({"instance_weight", "income"})
FILE_STEMS: tuple[str, ...] = ("census-income.data", "census-income.test")  # .data first when both exist
HOLDS = "census-income/census-income.test.gz"
SPLIT = SplitFractions(validation=0.2, test=0.2)


@dataclass(frozen=True, kw_only=True)
class CensusTask:
    """A binary task: 1 where ``column``'s stripped value is one of ``positive``."""

    name: str
    column: str
    positive: tuple[str, ...]
    meaning: str

    def label_source(self) -> dict:
        return {"column": self.column, "positive": list(self.positive), "meaning": self.meaning}


INCOME = CensusTask(name="income", column="income", positive=("50000+.",), meaning="income above 50,000 USD")
MARITAL = CensusTask(name="marital", column="marital_stat", positive=("Never married",), meaning="never married")
EDUCATION = CensusTask(
    name="education",
    column="education",
    positive=(
        "Some college but no degree",
        "Associates degree-occup /vocational",
        "Associates degree-academic program",
        "Bachelors degree(BA AB BS)",
        "Masters degree(MA MS MEng MEd MSW MBA)",
        "Prof school degree (MD DDS DVM LLB JD)",
        "Doctorate degree(PhD EdD)",
    ),
    meaning="at least some college",
)
TASK_GROUPS: dict[str, tuple[CensusTask, ...]] = {
    "income-marital": (INCOME, MARITAL),
    "education-marital": (EDUCATION, MARITAL),
}


def feature_columns(task_group: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(categorical, numerical) feature names of a task group: no label column, no instance weight."""
    tasks = _tasks(task_group)
    excluded = NEVER_FEATURES | {t.column for t in tasks}
    categorical = tuple(c for c in COLUMNS if c not in excluded and c not in NUMERICAL)
    numerical = tuple(c for c in NUMERICAL if c not in excluded)
    return categorical, numerical


def find_census_files(data_dir: str | Path) -> tuple[Path, ...]:
    """The census files to read (``.data`` then ``.test``, gz or plain) in data_dir or data_dir/census-income."""
    root = Path(data_dir).expanduser()
    if root.is_file():
        return (root,)
    for folder in (root, root / "census-income"):
        found = []
        for stem in FILE_STEMS:
            for name in (f"{stem}.gz", stem):
                if (folder / name).is_file():
                    found.append(folder / name)
                    break
        if found:
            return tuple(found)
    raise DataError(
        f"no census-income file (census-income.test.gz, census-income.data.gz or unzipped) in "
        f"{str(root)!r} or its census-income/ folder; set --data-dir or MOME_DATA_DIR to the folder holding {HOLDS}"
    )


def find_census_file(data_dir: str | Path) -> Path:
    """The first census file that :func:`find_census_files` would read."""
    return find_census_files(data_dir)[0]


def read_census(files: tuple[Path, ...], *, max_rows: int | None = None) -> pd.DataFrame:
    """Raw census rows as strings (42 named columns), the files concatenated, at most ``max_rows``."""
    frames = []
    remaining = max_rows
    for path in files:
        if remaining is not None and remaining <= 0:
            break
        try:
            frame = pd.read_csv(
                path,
                header=None,
                names=list(COLUMNS),
                sep=",",  # the separator is ", ": values keep a leading space, which every encoder strips
                dtype=str,
                keep_default_na=False,  # "?" and friends are decided by the encoders' one missing rule
                engine="pyarrow",  # 4x faster than the C parser here; it has no nrows, hence head()
            )
        except (OSError, ValueError, pd.errors.ParserError, EOFError) as exc:
            raise DataError(
                f"cannot read census file {str(path)!r} ({exc}); re-download it from the UCI archive"
            ) from exc
        if frame.shape[1] != len(COLUMNS) or frame[COLUMNS[-1]].isna().any():
            raise DataError(
                f"census file {str(path)!r} does not have {len(COLUMNS)} columns on every row; "
                "use the UCI census-income (KDD) file unchanged"
            )
        if remaining is not None:
            frame = frame.head(remaining)
        frames.append(frame)
        if remaining is not None:
            remaining -= len(frame)
    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)


def load_census(
    data_dir: str | Path | None = None,
    *,
    task_group: str = "income-marital",
    seed: int = 0,
    max_rows: int | None = None,
) -> DataSplits:
    """Census-Income (KDD) as DataSplits: seeded 60/20/20 split, encoders fitted on train."""
    tasks = _tasks(task_group)
    files = find_census_files(resolve_data_dir(data_dir, holds=HOLDS))
    frame = read_census(files, max_rows=max_rows)
    labels = np.zeros((len(frame), len(tasks)), dtype=np.float32)  # (N, T)
    for t, task in enumerate(tasks):
        labels[:, t], missing = positive_label(frame[task.column], task.positive)
        if missing.any():
            raise DataError(
                f"{int(missing.sum())} census rows have no value in label column {task.column!r}; "
                "use the UCI census-income (KDD) file unchanged"
            )
    categorical, numerical = feature_columns(task_group)
    return build_splits(
        frame,
        labels,
        split_indices(len(frame), fractions=SPLIT, seed=seed),
        dataset=DATASET,
        categorical=categorical,
        numerical=numerical,
        tasks=[t.name for t in tasks],
        label_sources={t.name: t.label_source() for t in tasks},
        log1p=LOG1P,
    )


def _tasks(task_group: str) -> tuple[CensusTask, ...]:
    try:
        return TASK_GROUPS[task_group]
    except KeyError:
        raise DataError(
            f"unknown census task group {task_group!r}; use one of {sorted(TASK_GROUPS)}"
        ) from None
