"""Loopback stand-ins for cloud services used only by the tests (an OSS gateway, a Tablestore fake) and
the pytest fixtures over those in scripts/stand_ins/ (moto and its fault proxy)."""
