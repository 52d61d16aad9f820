"""`python -m scripts.bench`: see the package's docstring."""
import sys

from scripts.bench.cli import main

sys.exit(main())
