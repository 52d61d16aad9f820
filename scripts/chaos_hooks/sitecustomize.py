"""Python runs this at start-up in the drain processes scripts/chaos.py starts (it puts this
directory first on their PYTHONPATH). Inert unless the harness set one of its variables;
see scripts/chaos_probe.py."""
import os

if os.environ.get("ALICOM_CHAOS_PHASE_FILE") or os.environ.get("ALICOM_CHAOS_CRASH_AT"):
    from scripts.chaos_probe import install

    install()
