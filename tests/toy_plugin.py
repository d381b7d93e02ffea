"""The toy methods as a plugin file, for drivers and ``train`` commands run in a subprocess:
``python -m skipnet_sweep.run --plugin tests/toy_plugin.py ...``. Importing it registers
both (the tests in this process register them with fixtures instead)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from toy_method import LabelSmoothing, ToyRouted  # noqa: E402

from skipnet_sweep.methods import register_method  # noqa: E402

register_method(LabelSmoothing, replace=True)
register_method(ToyRouted, replace=True)
