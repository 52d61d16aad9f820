"""Python runs this at start-up in the drain processes the chaos harness starts (it puts this
directory first on their PYTHONPATH). Inert unless the harness set one of its variables;
see scripts/chaos/probe.py."""
import os

if any(os.environ.get(v) for v in ("ALICOM_CHAOS_PHASE_FILE", "ALICOM_CHAOS_CRASH_AT", "ALICOM_CHAOS_SABOTAGE")):
    from scripts.chaos.probe import install

    install()
