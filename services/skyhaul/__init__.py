"""Skyhaul: an emulator of a satellite-backed cloud backbone."""

__version__ = "0.1.0"
