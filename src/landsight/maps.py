"""Deprecated alias of :mod:`landsight.results.maps` (moved there with the other "looking at results" modules).

Import from ``landsight.results.maps`` instead; this module only re-exports its public names.
"""

import warnings

from landsight.results.maps import *  # noqa: F403
from landsight.results.maps import __all__  # noqa: F401

warnings.warn(
    "landsight.maps is deprecated: it moved to landsight.results.maps; import it from there",
    DeprecationWarning,
    stacklevel=2,
)
