"""Loopback emulator of the Alibaba APIs alicom-drain calls (token, MNS queue,
send records, function invoke), speaking their real wire formats and checking
their signatures. See `control.Emulator` for the Python API."""
from .control import DEFAULT_AK, DEFAULT_SECRET, Emulator

__all__ = ["Emulator", "DEFAULT_AK", "DEFAULT_SECRET"]
