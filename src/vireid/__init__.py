"""vireid: visible-infrared cross-modality person re-identification (DSCSN + CCN)."""

__version__ = "0.1.0"
