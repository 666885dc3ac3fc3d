"""Semantic segmentation: pixel-level land cover with a U-Net on multiband rasters.

Modules, one concept each, in pipeline order: :mod:`~landsight.segment.classmap` (class map YAML,
remap, ignore index, colour masks), :mod:`~landsight.segment.raster` (the one place that opens
rasters, windowed), :mod:`~landsight.segment.pairs` (image/label pairing),
:mod:`~landsight.segment.stats` (per-band statistics), :mod:`~landsight.segment.chips` (random
chip sampler), :mod:`~landsight.segment.model` (smp U-Net / DeepLabV3+ with a timm encoder),
:mod:`~landsight.segment.train`, :mod:`~landsight.segment.bundle`,
:mod:`~landsight.segment.predict` (windowed GeoTIFF writer) and
:mod:`~landsight.segment.evaluate`. Torch is imported only by the training and model modules.
"""
