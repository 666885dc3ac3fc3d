"""Deprecated alias of :mod:`landsight.results.dedup` (moved there with the other "looking at results" modules).

Import from ``landsight.results.dedup`` instead; this module only re-exports its public names.
"""

import warnings

from landsight.results.dedup import *  # noqa: F403
from landsight.results.dedup import __all__  # noqa: F401

warnings.warn(
    "landsight.dedup is deprecated: it moved to landsight.results.dedup; import it from there",
    DeprecationWarning,
    stacklevel=2,
)
