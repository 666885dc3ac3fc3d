"""Classic heads on frozen features: scikit-learn logistic regression and random forest.

Heads are plain scikit-learn estimators (``fit`` returns self, fitted state ends in ``_``), so
skl2onnx converts them to ONNX for the bundle. Nothing here is ever pickled.

Every head is one entry of the registry :data:`HEADS` (name -> :class:`HeadSpec`): its factory,
the estimator classes it builds (so a fitted head is recognised with ``isinstance``, never by a
class-name string), the parameters ``bundle.json`` records and the hyperparameters
:func:`landsight.tune` searches. :func:`make_head`, :func:`head_kind`, :func:`describe_head`,
:func:`fit_head`, ``train`` and ``tune`` read the table, so adding a head is adding an entry.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from landsight.errors import LandsightValueError

__all__ = [
    "HEADS",
    "HeadSpec",
    "SearchParam",
    "describe_head",
    "final_estimator",
    "fit_head",
    "head_from_description",
    "head_kind",
    "head_spec",
    "make_head",
]


@dataclass(frozen=True)
class SearchParam:
    """One hyperparameter :func:`landsight.tune` searches for a head (log-uniform between bounds).

    Attributes:
        name: The :func:`make_head` keyword (also the Optuna parameter name).
        default: ``(low, high)`` searched unless ``tune`` is given other bounds.
        integer: Search integers (``suggest_int``) rather than floats.
    """

    name: str
    default: tuple[float, float]
    integer: bool = False

    def suggest(self, trial: Any, bounds: tuple[float, float]) -> float | int:
        """Draw the value of one Optuna trial.

        Args:
            trial: An ``optuna.Trial``.
            bounds: ``(low, high)`` of the search space.

        Returns:
            The trial's value (log-uniform).
        """
        if self.integer:
            return trial.suggest_int(self.name, int(bounds[0]), int(bounds[1]), log=True)
        return trial.suggest_float(self.name, float(bounds[0]), float(bounds[1]), log=True)

    def cast(self, value: Any) -> float | int:
        """``value`` as the keyword :func:`make_head` takes (``int`` or ``float``)."""
        return int(value) if self.integer else float(value)


@dataclass(frozen=True)
class HeadSpec:
    """What landsight knows about one kind of head.

    Attributes:
        name: Registry name (``--head`` on the command line, ``bundle.json``'s ``head.kind``).
        factory: Builds the unfitted scikit-learn estimator from the :func:`make_head` keywords
            named in ``options``; raises :class:`LandsightValueError` for a bad value.
        estimator_types: Returns the classes of the final estimator ``factory`` builds (the last
            step of a ``Pipeline``), for ``isinstance``; a function, so scikit-learn is imported
            only when a head is built or recognised.
        options: :func:`make_head` keywords the factory takes; the others are not passed.
        params: ``get_params()`` names of the final estimator recorded in ``bundle.json``'s
            ``head.params``.
        describe: Further ``head.params`` entries that ``get_params()`` does not hold (fitted
            values, pipeline steps), from the whole head; ``None`` for none.
        search: Hyperparameters :func:`landsight.tune` searches for this head.
        auto_C: The head takes ``C="auto"`` (cross-validated ``C``).
        prepare_fit: Called as ``prepare_fit(head, y)`` by :func:`fit_head` before fitting
            (e.g. to fit cross-validation folds to the labels); ``None`` for nothing.
        without_cv: Returns the head with its cross-validated hyperparameters replaced by fixed
            defaults (the head itself when it does not cross-validate), for training sets too
            small to fold; ``None`` when the head never cross-validates.
        summary: One line for help texts.
    """

    name: str
    factory: Callable[..., Any]
    estimator_types: Callable[[], tuple[type, ...]]
    options: tuple[str, ...]
    params: tuple[str, ...] = ()
    describe: Callable[[Any], dict[str, Any]] | None = None
    search: tuple[SearchParam, ...] = ()
    auto_C: bool = False
    prepare_fit: Callable[[Any, Any], None] | None = None
    without_cv: Callable[[Any], Any] | None = None
    summary: str = field(default="", compare=False)


def final_estimator(head: Any) -> Any:
    """The last step of a ``Pipeline`` head, or the head itself."""
    return head.steps[-1][1] if hasattr(head, "steps") else head


# -- logistic regression -----------------------------------------------------------------------


def _logreg_types() -> tuple[type, ...]:
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV

    return (LogisticRegression, LogisticRegressionCV)


def _make_logreg(
    *,
    C: float | str = 1.0,
    standardize: bool = True,
    max_iter: int = 2000,
    class_weight: str | None = None,
    random_state: int = 0,
    n_jobs: int | None = None,
) -> Any:
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if C == "auto":
        import numpy as np

        clf: Any = LogisticRegressionCV(
            Cs=list(np.logspace(-3, 2, 6)),
            cv=5,
            l1_ratios=(0.0,),  # pure L2
            scoring="neg_log_loss",
            use_legacy_attributes=False,
            max_iter=max_iter,
            class_weight=class_weight,
            random_state=random_state,
            n_jobs=n_jobs,
        )
    else:
        try:
            c_value = float(C)
        except (TypeError, ValueError):
            c_value = -1.0
        if not c_value > 0:
            raise LandsightValueError(
                f"The 'C' parameter of the logreg head must be a float in the range (0, inf] "
                f"or 'auto'. Got {C!r} instead."
            )
        clf = LogisticRegression(C=c_value, max_iter=max_iter, class_weight=class_weight, random_state=random_state)
    return make_pipeline(StandardScaler(), clf) if standardize else make_pipeline(clf)


def _is_cross_validated(final: Any) -> bool:
    from sklearn.linear_model import LogisticRegressionCV

    return isinstance(final, LogisticRegressionCV)


def _describe_logreg(head: Any) -> dict[str, Any]:
    import numpy as np

    final = final_estimator(head)
    chosen = hasattr(final, "C_")
    return {
        "C": float(np.ravel(final.C_)[0]) if chosen else float(final.C),
        "standardize": hasattr(head, "steps") and len(head.steps) > 1,
        "cross_validated_C": chosen,
    }


def _prepare_logreg_fit(head: Any, y: Any) -> None:
    import numpy as np

    final = final_estimator(head)
    if not _is_cross_validated(final):
        return
    labels, counts = np.unique(np.asarray(y), return_counts=True)
    smallest = int(counts.min())
    if smallest < 2:
        raise LandsightValueError(
            f"C='auto' cross-validates, but class {labels[counts.argmin()]!r} has {smallest} training image; "
            "add images or give a fixed C"
        )
    final.set_params(cv=min(5, smallest))


def _logreg_without_cv(head: Any) -> Any:
    final = final_estimator(head)
    if not _is_cross_validated(final):
        return head
    return _make_logreg(
        C=1.0, standardize=hasattr(head, "steps") and len(head.steps) > 1, max_iter=final.max_iter,
        class_weight=final.class_weight, random_state=final.random_state,
    )  # fmt: skip


# -- random forest -----------------------------------------------------------------------------


def _forest_types() -> tuple[type, ...]:
    from sklearn.ensemble import RandomForestClassifier

    return (RandomForestClassifier,)


def _make_forest(
    *,
    n_estimators: int = 300,
    max_depth: int | None = None,
    class_weight: str | None = None,
    random_state: int = 0,
    n_jobs: int | None = None,
) -> Any:
    from sklearn.ensemble import RandomForestClassifier

    if n_estimators < 1:
        raise LandsightValueError(f"n_estimators must be >= 1, got {n_estimators!r}")
    return RandomForestClassifier(
        n_estimators=n_estimators,
        max_depth=max_depth,
        class_weight=class_weight,
        random_state=random_state,
        n_jobs=n_jobs,
    )


#: The registry: head name -> :class:`HeadSpec`. ``"logreg" in HEADS`` and ``tuple(HEADS)``
#: give the valid names, as the tuple of names this used to be did.
HEADS: dict[str, HeadSpec] = {
    "logreg": HeadSpec(
        name="logreg",
        factory=_make_logreg,
        estimator_types=_logreg_types,
        options=("C", "standardize", "max_iter", "class_weight", "random_state", "n_jobs"),
        params=("C", "class_weight"),
        describe=_describe_logreg,
        search=(SearchParam("C", (1e-3, 1e2)),),
        auto_C=True,
        prepare_fit=_prepare_logreg_fit,
        without_cv=_logreg_without_cv,
        summary="multinomial logistic regression (lbfgs), optionally after standardisation",
    ),
    "forest": HeadSpec(
        name="forest",
        factory=_make_forest,
        estimator_types=_forest_types,
        options=("n_estimators", "max_depth", "class_weight", "random_state", "n_jobs"),
        params=("n_estimators", "max_depth", "class_weight"),
        search=(SearchParam("n_estimators", (20, 100), integer=True),),
        summary="random forest",
    ),
}


def head_spec(kind: str) -> HeadSpec:
    """The registry entry of a head.

    Args:
        kind: A name in :data:`HEADS`.

    Returns:
        Its :class:`HeadSpec`.

    Raises:
        LandsightValueError: ``kind`` is not registered (the message lists the valid names).
    """
    try:
        return HEADS[kind]
    except (KeyError, TypeError):
        raise LandsightValueError(f"unknown head {kind!r}; choose one of {list(HEADS)}") from None


def make_head(
    kind: str = "logreg",
    *,
    C: float | str = 1.0,
    standardize: bool = True,
    max_iter: int = 2000,
    n_estimators: int = 300,
    max_depth: int | None = None,
    class_weight: str | None = None,
    random_state: int = 0,
    n_jobs: int | None = None,
    **options: Any,
) -> Any:
    """Build an unfitted head.

    Each head takes the keywords its :class:`HeadSpec` names in ``options`` and ignores the
    others (``n_estimators`` means nothing to ``logreg``).

    Args:
        kind: A name in :data:`HEADS`: ``"logreg"``: multinomial logistic regression (lbfgs),
            optionally after feature standardisation; ``"forest"``: random forest.
        C: Inverse L2 regularisation strength of ``logreg`` (> 0), or ``"auto"`` to choose it
            by stratified cross-validation (5 folds, fewer for classes with fewer images) of the
            log-loss over ``logspace(-3, 2, 6)`` (``LogisticRegressionCV``).
        standardize: ``logreg`` only: z-score each feature first (``StandardScaler``).
        max_iter: ``logreg`` solver iterations.
        n_estimators: ``forest`` trees.
        max_depth: ``forest`` maximum tree depth (``None`` = unlimited).
        class_weight: ``None`` or ``"balanced"`` (weights inversely proportional to class
            frequency, for imbalanced classes).
        random_state: Seed.
        n_jobs: Parallel jobs (``None`` = 1, ``-1`` = all cores).
        **options: Keywords of a registered head that the ones above do not cover (each must
            be in its :attr:`HeadSpec.options`).

    Returns:
        A scikit-learn estimator (a ``Pipeline`` for ``logreg``).

    Raises:
        LandsightValueError: Unknown ``kind``, ``C`` not positive, bad ``class_weight``.
        TypeError: A keyword in ``options`` that the head does not take.

    """
    if class_weight not in (None, "balanced"):
        raise LandsightValueError(f"class_weight must be None or 'balanced', got {class_weight!r}")
    spec = head_spec(kind)
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        raise TypeError(f"make_head() got unexpected keyword argument(s) {unknown} for head {kind!r}")
    given = {"C": C, "standardize": standardize, "max_iter": max_iter, "n_estimators": n_estimators,
             "max_depth": max_depth, "class_weight": class_weight, "random_state": random_state, "n_jobs": n_jobs,
             **options}  # fmt: skip
    return spec.factory(**{k: v for k, v in given.items() if k in spec.options})


def head_kind(head: Any) -> str:
    """Which registered head an estimator is, by ``isinstance`` of its final step.

    Args:
        head: An estimator (fitted or not), or a ``Pipeline`` ending in one.

    Returns:
        Its name in :data:`HEADS`.

    Raises:
        LandsightValueError: The estimator is not one any registered head builds.
    """
    name = _registered(head)
    if name is None:
        raise LandsightValueError(
            f"{type(final_estimator(head)).__name__} is not a registered head (known: {list(HEADS)}); "
            "register it in landsight.models.heads.HEADS"
        )
    return name


def _registered(head: Any) -> str | None:
    """The registry name whose estimator classes the head's final step is an instance of."""
    final = final_estimator(head)
    return next((name for name, spec in HEADS.items() if isinstance(final, spec.estimator_types())), None)


def _json_ready(value: Any) -> Any:
    """Numpy scalars and tuples as plain JSON values."""
    if hasattr(value, "item") and getattr(value, "shape", None) == ():
        return value.item()
    if isinstance(value, tuple):
        return [_json_ready(v) for v in value]
    return value


def describe_head(head: Any) -> dict[str, Any]:
    """Return a JSON-ready description of a fitted head (kind and key parameters).

    The parameters are the final estimator's ``get_params()`` entries named by its
    :attr:`HeadSpec.params`, plus those of :attr:`HeadSpec.describe`.

    Args:
        head: A fitted estimator from :func:`make_head`.

    Returns:
        ``{"kind": ..., "estimator": <class name>, "params": {...}}``; for ``C="auto"`` the
        chosen ``C``.

    Raises:
        LandsightValueError: ``head`` is not a registered head.

    """
    kind = head_kind(head)
    spec = HEADS[kind]
    final = final_estimator(head)
    given: Mapping[str, Any] = final.get_params(deep=False)
    params = {k: _json_ready(given[k]) for k in spec.params if k in given}
    if spec.describe is not None:
        params.update(spec.describe(head))
    return {"kind": kind, "estimator": type(final).__name__, "params": params}


def head_from_description(described: Mapping[str, Any], **overrides: Any) -> Any:
    """Rebuild the unfitted head a :func:`describe_head` description (``bundle.json``'s ``head``) records.

    The recorded ``params`` that are :func:`make_head` keywords of the head are passed back
    (for ``C="auto"`` the ``C`` it chose, so the rebuilt head has a fixed ``C``).

    Args:
        described: ``{"kind": ..., "params": {...}}``.
        **overrides: :func:`make_head` keywords that replace recorded ones (e.g. ``random_state``).

    Returns:
        An unfitted head.

    Raises:
        LandsightValueError: ``kind`` is not registered, or a recorded value is out of range.
    """
    kind = described.get("kind", "")
    spec = head_spec(kind)
    kept = {k: v for k, v in dict(described.get("params") or {}).items() if k in spec.options}
    return make_head(kind, **{**kept, **overrides})


def fit_head(head: Any, X: Any, y: Any) -> Any:
    """Fit a head from :func:`make_head`, first fitting cross-validation folds to the data.

    Args:
        head: Unfitted head.
        X: ``(n_samples, n_features)`` float32 features.
        y: ``(n_samples,)`` class labels.

    Returns:
        The fitted head.

    Raises:
        LandsightValueError: ``C="auto"`` with a class of fewer than two training images.
    """
    name = _registered(head)
    prepare = None if name is None else HEADS[name].prepare_fit
    if prepare is not None:
        prepare(head, y)
    from threadpoolctl import threadpool_limits

    # One BLAS thread: these fits are small, and on a busy machine OpenBLAS's spinning threads
    # made them 17-25x slower (C=1: 3.5 s -> 0.2 s, C="auto": 102 s -> 4.3 s, 336 x 1280
    # features, 21 classes, 2 cores under load; benchmarks/RESULTS.md "Choosing the defaults").
    with threadpool_limits(limits=1, user_api="blas"):
        return head.fit(X, y)
