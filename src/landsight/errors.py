"""The landsight error hierarchy.

Every error landsight raises on bad input derives from :class:`LandsightError` and also from
the matching builtin (as rasterio's ``RasterioIOError(RasterioError, OSError)`` does), so callers
can catch either ``LandsightError`` or the builtin they already expect.
"""

from __future__ import annotations


class LandsightError(Exception):
    """Base class of every error landsight raises on purpose."""


class LandsightValueError(LandsightError, ValueError):
    """A parameter or a dataset has an invalid value; the message names it and the fix."""


class DataNotFoundError(LandsightError, FileNotFoundError):
    """A path, folder, archive member or map-file entry does not exist."""


class ImageReadError(LandsightError, OSError):
    """An image could not be decoded.

    Args:
        path: The file that failed, as given.
        reason: A short human-readable reason ("zero-byte file", "truncated JPEG", ...).

    """

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"cannot read image {path!r}: {reason}")
        self.path = path
        self.reason = reason


class UnsafeArchiveError(LandsightError, ValueError):
    """A zip archive member would be written outside the extraction folder (zip slip)."""


class WeightsUnavailableError(LandsightError, RuntimeError):
    """Pretrained weights for a backbone cannot be obtained (offline, unknown name, bad file)."""


class BundleError(LandsightError, ValueError):
    """A model bundle is missing, incomplete or of an unsupported schema version."""


class OutputExistsError(LandsightError, FileExistsError):
    """An output file or folder exists and replacing it was not asked for (``--overwrite``)."""


class ResourceLimitError(LandsightError, ValueError):
    """An input would need more memory or disk than the configured limit (decompression bomb, huge image)."""


class ImageTooLargeError(ImageReadError, ResourceLimitError):
    """An image's header promises more pixels or decoding memory than the limit (decompression bomb).

    Raised before the pixels are decoded. It is an :class:`ImageReadError` (readers that skip
    unreadable files skip it too) and a :class:`ResourceLimitError` (the scoring service answers
    413).
    """
