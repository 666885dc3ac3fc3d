"""Looking at results: maps, change between two predictions, reports, run history, duplicates.

These modules read what the tasks wrote (predictions tables, bundles, MLflow runs, image folders)
and present it: :mod:`~landsight.results.maps` (interactive and static maps of tile predictions),
:mod:`~landsight.results.change` (tiles whose class changed), :mod:`~landsight.results.report`
(one HTML report of a bundle or run), :mod:`~landsight.results.runs` (the MLflow run table and
curves) and :mod:`~landsight.results.dedup` (near-duplicate images). They import from
:mod:`landsight.data`, :mod:`landsight.classify`, :mod:`landsight.bundle`,
:mod:`landsight.predictions` and the like; nothing below the CLI imports them.
"""
