"""landsight: transfer learning on imagery, aerial imagery first."""
__version__ = "0.1.0"
