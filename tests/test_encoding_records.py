"""The feature spec's value objects (mome_edge.encoding): immutable, compared and hashed by
their fields, rebuilt through their validating constructor by replace, copy and pickle."""

from __future__ import annotations

import copy
import pickle

import pytest

from mome_edge.encoding import CategoricalEncoder, FeatureSpec, NumericalScaler
from mome_edge.errors import DataError


def _spec(**changes) -> FeatureSpec:
    fields = dict(
        dataset="d", categorical=(CategoricalEncoder(name="city", vocabulary=("a", "b")),),
        numerical=(NumericalScaler(name="age", mean=40.0, std=12.0),), tasks=("click",),
        label_sources={"click": {"column": "clicked"}},
    )
    return FeatureSpec(**{**fields, **changes})


def test_records_are_immutable_and_compare_by_fields() -> None:
    spec = _spec()
    with pytest.raises(AttributeError, match="immutable"):
        spec.dataset = "other"  # type: ignore[misc]
    with pytest.raises(AttributeError, match="immutable"):
        del spec.categorical[0].name
    assert spec == _spec() and spec != _spec(dataset="other") and spec != "d"
    encoder = CategoricalEncoder(name="city", vocabulary=("a", "b"))
    assert encoder == spec.categorical[0] and hash(encoder) == hash(spec.categorical[0])
    assert hash(NumericalScaler(name="x", mean=0.0, std=1.0)) == hash(NumericalScaler(name="x", mean=0.0, std=1.0))
    assert repr(encoder) == "CategoricalEncoder(name='city', vocabulary=('a', 'b'))"
    with pytest.raises(TypeError):
        NumericalScaler("x", 0.0, 1.0)  # type: ignore[misc]  # keyword-only, as the dataclasses were


def test_replace_copy_and_pickle_rebuild_through_the_constructor() -> None:
    spec = _spec()
    assert spec.replace(tasks=("click", "buy")).tasks == ("click", "buy") and spec.tasks == ("click",)
    with pytest.raises(DataError, match="std must be finite"):
        spec.numerical[0].replace(std=0.0)
    with pytest.raises(DataError, match="defines no task"):
        spec.replace(tasks=())
    restored = pickle.loads(pickle.dumps(spec))
    assert restored == spec and restored.categorical[0].encode(["b", "zzz"]).tolist() == [2, 0]
    assert copy.copy(spec) is spec
    deep = copy.deepcopy(spec)
    assert deep == spec and deep.label_sources is not spec.label_sources  # the free-form mapping is copied
    assert copy.deepcopy(spec.categorical[0]) is spec.categorical[0]
