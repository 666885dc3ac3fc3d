"""Deprecated alias of :mod:`landsight.results.change` (moved there with the other "looking at results" modules).

Import from ``landsight.results.change`` instead; this module only re-exports its public names.
"""

import warnings

from landsight.results.change import *  # noqa: F403
from landsight.results.change import __all__  # noqa: F401

warnings.warn(
    "landsight.change is deprecated: it moved to landsight.results.change; import it from there",
    DeprecationWarning,
    stacklevel=2,
)
