"""Image classification by transfer learning: frozen-feature classifiers and fine-tuning.

Modules, one concept each, in pipeline order: :mod:`~landsight.classify.featurize` (pooled
backbone features in onnxruntime, cached), :mod:`~landsight.classify.train` (linear probe /
frozen-feature classifier: a logistic-regression or random-forest head on those features),
:mod:`~landsight.classify.finetune` (fine-tuning at a retraining depth, data-parallel, with the
Lightning module of :mod:`~landsight.classify.module`),
:mod:`~landsight.classify.bundle` (the classification bundle: one ONNX graph, uint8 images in,
probabilities out), :mod:`~landsight.classify.predict` (batch prediction to a predictions table,
resumable), :mod:`~landsight.classify.evaluate` (held-out metrics and confusion matrix) and
:mod:`~landsight.classify.demo`. The public functions are re-exported by :mod:`landsight`
(``landsight.train``...); this package defines no names of its own, so none can be shadowed by
its submodules.
"""
