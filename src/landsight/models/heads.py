"""Classic heads on frozen features: scikit-learn logistic regression and random forest.

Heads are plain scikit-learn estimators (``fit`` returns self, fitted state ends in ``_``), so
skl2onnx converts them to ONNX for the bundle. Nothing here is ever pickled.
"""

from __future__ import annotations

from typing import Any, Literal

from landsight.errors import LandsightValueError

HEADS = ("logreg", "forest")
HeadKind = Literal["logreg", "forest"]


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
) -> Any:
    """Build an unfitted head.

    Args:
        kind: ``"logreg"``: multinomial logistic regression (lbfgs), optionally after feature
            standardisation; ``"forest"``: random forest.
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

    Returns:
        A scikit-learn estimator (a ``Pipeline`` for ``logreg``).

    Raises:
        LandsightValueError: Unknown ``kind``, ``C`` not positive, bad ``class_weight``.

    """
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if class_weight not in (None, "balanced"):
        raise LandsightValueError(f"class_weight must be None or 'balanced', got {class_weight!r}")
    if kind == "logreg":
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
    if kind == "forest":
        if n_estimators < 1:
            raise LandsightValueError(f"n_estimators must be >= 1, got {n_estimators!r}")
        return RandomForestClassifier(
            n_estimators=n_estimators,
            max_depth=max_depth,
            class_weight=class_weight,
            random_state=random_state,
            n_jobs=n_jobs,
        )
    raise LandsightValueError(f"unknown head {kind!r}; choose one of {list(HEADS)}")


def describe_head(head: Any) -> dict[str, Any]:
    """Return a JSON-ready description of a fitted head (kind and key parameters).

    Args:
        head: A fitted estimator from :func:`make_head`.

    Returns:
        ``{"kind": ..., "params": {...}}``; for ``C="auto"`` the chosen ``C``.

    """
    import numpy as np

    final = head.steps[-1][1] if hasattr(head, "steps") else head
    name = type(final).__name__
    if name.startswith("LogisticRegression"):
        params: dict[str, Any] = {
            "C": float(np.ravel(final.C_)[0]) if hasattr(final, "C_") else float(final.C),
            "standardize": hasattr(head, "steps") and len(head.steps) > 1,
            "class_weight": final.class_weight,
            "cross_validated_C": hasattr(final, "C_"),
        }
        return {"kind": "logreg", "estimator": name, "params": params}
    params = {
        "n_estimators": final.n_estimators,
        "max_depth": final.max_depth,
        "class_weight": final.class_weight,
    }
    return {"kind": "forest", "estimator": name, "params": params}


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
    import numpy as np

    final = head.steps[-1][1] if hasattr(head, "steps") else head
    if type(final).__name__ == "LogisticRegressionCV":
        labels, counts = np.unique(np.asarray(y), return_counts=True)
        smallest = int(counts.min())
        if smallest < 2:
            raise LandsightValueError(
                f"C='auto' cross-validates, but class {labels[counts.argmin()]!r} has {smallest} training image; "
                "add images or give a fixed C"
            )
        final.set_params(cv=min(5, smallest))
    from threadpoolctl import threadpool_limits

    # One BLAS thread: these fits are small, and on a busy machine OpenBLAS's spinning threads
    # made them 17-25x slower (C=1: 3.5 s -> 0.2 s, C="auto": 102 s -> 4.3 s, 336 x 1280
    # features, 21 classes, 2 cores under load; benchmarks/RESULTS.md "Choosing the defaults").
    with threadpool_limits(limits=1, user_api="blas"):
        return head.fit(X, y)
