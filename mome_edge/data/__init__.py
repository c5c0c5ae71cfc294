"""Data sets as encoded multi-task splits: ``load_dataset(...) -> DataSplits``.

Built in: "census-income" (UCI Census-Income KDD), "aliexpress" (processed AliExpress CSVs),
"synthetic" (the MMoE paper's generator) and "synthetic-aliexpress" (AliExpress layout, any
size, streamed); or a user TOML spec. Encoders are fitted on the training split only.
No torch here: numpy, pandas and pyarrow only.
"""

from mome_edge.data.aliexpress import find_aliexpress_files, load_aliexpress
from mome_edge.data.census import TASK_GROUPS, find_census_file, find_census_files, load_census
from mome_edge.data.paths import DATA_DIR_ENV, default_data_dir
from mome_edge.data.registry import DATASET_NAMES, load_dataset
from mome_edge.data.splits import SplitFractions, SplitIndex, split_indices
from mome_edge.data.synthetic import MMoESyntheticArrays, make_mmoe_arrays, make_mmoe_synthetic
from mome_edge.data.synthetic_aliexpress import (
    iter_aliexpress_chunks,
    load_synthetic_aliexpress,
    make_aliexpress_frame,
    write_aliexpress_csv,
    write_aliexpress_parquet,
)
from mome_edge.data.types import DataSplits, MultiTaskData
from mome_edge.data.user_spec import UserDataSpec, load_user_spec, read_user_spec

__all__ = [
    "DATASET_NAMES",
    "DATA_DIR_ENV",
    "TASK_GROUPS",
    "DataSplits",
    "MMoESyntheticArrays",
    "MultiTaskData",
    "SplitFractions",
    "SplitIndex",
    "UserDataSpec",
    "default_data_dir",
    "find_aliexpress_files",
    "find_census_file",
    "find_census_files",
    "iter_aliexpress_chunks",
    "load_aliexpress",
    "load_census",
    "load_dataset",
    "load_synthetic_aliexpress",
    "load_user_spec",
    "make_aliexpress_frame",
    "make_mmoe_arrays",
    "make_mmoe_synthetic",
    "read_user_spec",
    "split_indices",
    "write_aliexpress_csv",
    "write_aliexpress_parquet",
]
