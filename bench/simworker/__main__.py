"""``python -m bench.simworker`` (from the repository root)."""
import sys

from bench.simworker.cli import main

sys.exit(main())
