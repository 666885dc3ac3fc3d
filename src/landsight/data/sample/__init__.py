"""The bundled demo sample (EuroSAT RGB, MIT licence; see ATTRIBUTION.md)."""

from __future__ import annotations

from pathlib import Path

SAMPLE_DIR = Path(__file__).resolve().parent


def eurosat_sample() -> Path:
    """Folder of the bundled EuroSAT RGB sample: 10 class folders of 50 64x64 JPEGs each.

    Source: Helber et al., "EuroSAT", IEEE JSTARS 12(7), 2019 (MIT licence), Copernicus
    Sentinel-2 data.
    """
    return SAMPLE_DIR / "eurosat_rgb"
