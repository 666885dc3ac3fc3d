"""Deprecated alias of :mod:`landsight.results.report` (moved there with the other "looking at results" modules).

Import from ``landsight.results.report`` instead; this module only re-exports its public names.
"""

import warnings

from landsight.results.report import *  # noqa: F403
from landsight.results.report import __all__  # noqa: F401

warnings.warn(
    "landsight.report is deprecated: it moved to landsight.results.report; import it from there",
    DeprecationWarning,
    stacklevel=2,
)
