"""EDL platform: hosted External Dynamic Lists from threat-intelligence sources."""

__version__ = "0.1.0"
