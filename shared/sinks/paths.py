"""SINK_PATH for the local sinks: an unusable path is a settings error at start-up, naming
the variable and what it should be, not an OSError at the first write."""
from __future__ import annotations

import tempfile
from pathlib import Path

DIRECTORY_FORM = "a directory the function can create and write files in (SINK=file)"
DATABASE_FORM = "the path of an SQLite database file, in a directory the function can create and write in (SINK=sqlite)"


def settings_error(path: str, problem: str, form: str) -> Exception:
    from shared.settings import SettingsError

    return SettingsError(f"invalid settings: SINK_PATH: {path!r} {problem}; expected {form}")


def writable_directory(directory: Path, path: str, form: str) -> Path:
    """`directory`, created if missing, once a file could be created in it; else SettingsError."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory, prefix=".probe-"):
            pass
    except FileExistsError:
        raise settings_error(path, f"cannot be used: {str(directory)!r} is a file, not a directory", form) from None
    except OSError as exc:
        raise settings_error(path, f"cannot be used: {exc.strerror or type(exc).__name__}", form) from None
    return directory
