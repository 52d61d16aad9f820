# Sourced by scripts/test and scripts/demo: make .venv and install requirements once
# (again whenever a requirements file changes).
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "Creating $VENV with $("$PYTHON" --version 2>&1)"
  # Debian's python3 lacks ensurepip unless python3-venv is installed: fall back to virtualenv
  # (a pip package that brings its own pip) so a machine with only Python and pip works too.
  if ! "$PYTHON" -m venv "$VENV" 2>/dev/null; then
    rm -rf "$VENV"
    "$PYTHON" -m pip install --quiet --user virtualenv 2>/dev/null \
      || "$PYTHON" -m pip install --quiet --break-system-packages --user virtualenv
    "$PYTHON" -m virtualenv --quiet "$VENV"
  fi
fi
stamp="$VENV/.requirements.sha256"
want="$(cat requirements.txt requirements-dev.txt | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  # Shown, not hidden: the first install takes a minute or two and should not look like a hang.
  echo "Installing the requirements into $VENV (first run, or a requirements file changed)..."
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
  # One line per package as pip collects it (errors go to stderr, unfiltered).
  "$VENV/bin/python" -m pip install --disable-pip-version-check -r requirements-dev.txt \
    | { grep --line-buffered -E '^(Collecting|Processing|Downloading|Installing collected|Successfully installed)' || true; }
  status="${PIPESTATUS[0]}"
  if [ "$status" != 0 ]; then
    echo "pip install -r requirements-dev.txt failed (exit $status)" >&2
    exit "$status"
  fi
  echo "$want" > "$stamp"
  echo "Requirements installed."
fi
