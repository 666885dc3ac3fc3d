"""The head registry: heads are recognised by ``isinstance`` against ``HEADS``, and one entry adds a head."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from landsight.errors import LandsightValueError
from landsight.models import heads
from landsight.models.heads import (
    HEADS,
    HeadSpec,
    SearchParam,
    describe_head,
    fit_head,
    head_from_description,
    head_kind,
    make_head,
)


def _blobs(n: int = 30, d: int = 5) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = np.repeat(np.array(["a", "b", "c"], dtype=object), n // 3)
    X = (rng.normal(size=(n, d)) + np.repeat(np.eye(3, d) * 3.0, n // 3, axis=0)).astype(np.float32)
    return X, y


def test_heads_is_a_sequence_of_names() -> None:
    assert "logreg" in HEADS and "forest" in HEADS and "knn" not in HEADS
    assert tuple(HEADS) == ("logreg", "forest") and list(HEADS) == ["logreg", "forest"]
    assert all(isinstance(spec, HeadSpec) for spec in HEADS.values())


@pytest.mark.parametrize(
    ("kind", "kwargs"),
    [("logreg", {}), ("logreg", {"C": "auto"}), ("logreg", {"standardize": False}), ("forest", {"n_estimators": 5})],
)
def test_head_kind_round_trips(kind: str, kwargs: dict[str, Any]) -> None:
    X, y = _blobs()
    head = make_head(kind, **kwargs)
    assert head_kind(head) == kind  # unfitted
    fit_head(head, X, y)
    assert head_kind(head) == kind  # fitted
    described = describe_head(head)
    assert described["kind"] == kind and described["estimator"] == type(heads.final_estimator(head)).__name__
    json.dumps(described)  # JSON-ready, as bundle.json stores it


def test_describe_head_keeps_the_bundle_keys() -> None:
    X, y = _blobs()
    logreg = fit_head(make_head("logreg", C=0.5, class_weight="balanced"), X, y)
    assert describe_head(logreg) == {
        "kind": "logreg",
        "estimator": "LogisticRegression",
        "params": {"C": 0.5, "standardize": True, "class_weight": "balanced", "cross_validated_C": False},
    }
    auto = describe_head(fit_head(make_head("logreg", C="auto", standardize=False), X, y))
    assert auto["estimator"] == "LogisticRegressionCV" and auto["params"]["cross_validated_C"] is True
    assert auto["params"]["standardize"] is False
    assert any(auto["params"]["C"] == pytest.approx(c) for c in np.logspace(-3, 2, 6))
    forest = fit_head(make_head("forest", n_estimators=4, max_depth=3), X, y)
    assert describe_head(forest) == {
        "kind": "forest",
        "estimator": "RandomForestClassifier",
        "params": {"n_estimators": 4, "max_depth": 3, "class_weight": None},
    }


def test_a_description_rebuilds_its_head() -> None:
    X, y = _blobs()
    for head in (make_head("logreg", C="auto", standardize=False, class_weight="balanced"),
                 make_head("forest", n_estimators=4, max_depth=3)):  # fmt: skip
        described = describe_head(fit_head(head, X, y))
        rebuilt = fit_head(head_from_description(json.loads(json.dumps(described)), random_state=1), X, y)
        again = describe_head(rebuilt)
        assert again["kind"] == described["kind"] and heads.final_estimator(rebuilt).random_state == 1
        assert {k: v for k, v in again["params"].items() if k != "cross_validated_C"} == {
            k: v for k, v in described["params"].items() if k != "cross_validated_C"
        }
    with pytest.raises(LandsightValueError, match="unknown head 'finetune'"):
        head_from_description({"kind": "finetune", "params": {}})


def test_an_unregistered_estimator_is_an_error_not_a_forest() -> None:
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = _blobs()
    knn = KNeighborsClassifier(n_neighbors=3).fit(X, y)
    for estimator in (knn, make_pipeline(StandardScaler(), knn)):
        with pytest.raises(LandsightValueError, match=r"KNeighborsClassifier is not a registered head.*logreg"):
            head_kind(estimator)
        with pytest.raises(LandsightValueError, match="not a registered head"):
            describe_head(estimator)


def test_make_head_errors_list_the_registry() -> None:
    with pytest.raises(LandsightValueError, match=r"unknown head 'knn'; choose one of \['logreg', 'forest'\]"):
        make_head("knn")
    with pytest.raises(LandsightValueError, match="class_weight"):
        make_head("logreg", class_weight="auto")
    with pytest.raises(LandsightValueError, match="'C' parameter"):
        make_head("logreg", C=0)
    with pytest.raises(TypeError, match="n_neighbors"):
        make_head("logreg", n_neighbors=3)


def test_one_table_entry_adds_a_head(monkeypatch: pytest.MonkeyPatch) -> None:
    """A toy k-nearest-neighbours head, registered only in ``HEADS``: build, recognise, fit, describe."""
    from sklearn.neighbors import KNeighborsClassifier

    def make_knn(*, n_neighbors: int = 5, class_weight: str | None = None) -> Any:
        return KNeighborsClassifier(n_neighbors=n_neighbors)

    knn = HeadSpec(
        name="knn",
        factory=make_knn,
        estimator_types=lambda: (KNeighborsClassifier,),
        options=("n_neighbors", "class_weight"),
        params=("n_neighbors", "weights"),
        search=(SearchParam("n_neighbors", (1, 15), integer=True),),
    )
    monkeypatch.setitem(heads.HEADS, "knn", knn)

    X, y = _blobs()
    head = make_head("knn", n_neighbors=3)
    assert isinstance(head, KNeighborsClassifier) and head.n_neighbors == 3
    assert head_kind(fit_head(head, X, y)) == "knn"
    assert describe_head(head) == {
        "kind": "knn",
        "estimator": "KNeighborsClassifier",
        "params": {"n_neighbors": 3, "weights": "uniform"},
    }
    assert head_kind(head_from_description(describe_head(head))) == "knn"
    assert head_kind(make_head("logreg")) == "logreg"  # the others are unchanged
    with pytest.raises(LandsightValueError, match=r"choose one of \['logreg', 'forest', 'knn'\]"):
        make_head("svm")


def test_train_falls_back_to_a_fixed_C_through_the_registry() -> None:
    from landsight.classify.train import _cross_validation_fallback

    auto = make_head("logreg", C="auto", standardize=False, class_weight="balanced", random_state=3)
    tiny = np.array(["a", "a", "b"], dtype=object)  # class "b" cannot be folded
    fixed = _cross_validation_fallback(auto, tiny)
    final = heads.final_estimator(fixed)
    assert head_kind(fixed) == "logreg" and type(final).__name__ == "LogisticRegression" and final.C == 1.0
    assert len(fixed.steps) == 1 and final.class_weight == "balanced" and final.random_state == 3
    assert _cross_validation_fallback(auto, np.array(["a", "a", "b", "b"], dtype=object)) is auto
    forest = make_head("forest")
    assert _cross_validation_fallback(forest, tiny) is forest
    with pytest.raises(LandsightValueError, match="1 training image"):
        fit_head(auto, np.zeros((3, 2), dtype=np.float32), tiny)


def test_spark_heads_are_keyed_by_registry_names() -> None:
    pytest.importorskip("pyspark")
    from landsight.spark.heads import SPARK_HEADS, check_head_params

    assert set(SPARK_HEADS) <= set(HEADS)
    with pytest.raises(LandsightValueError, match=r"unknown head 'knn'; choose one of"):
        check_head_params("knn")
    check_head_params("forest", n_estimators=3, max_depth=4)
    with pytest.raises(LandsightValueError, match="MLlib's limit"):
        check_head_params("forest", max_depth=40)
