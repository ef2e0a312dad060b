"""Settings for the whole test suite.

The tests mirror the packages (``tests/convnn/``, ``tests/lightning_modules/``,
``tests/datamodules/``, ``tests/ablations/``, ``tests/cli/``); what crosses them stays at the
top. The shared helpers live in ``tests/helpers/`` and are imported by module name
(``from training_helpers import tiny_config``), so that folder goes on ``sys.path`` here.
"""

import os
import sys
from pathlib import Path

HELPERS = Path(__file__).resolve().parent / "helpers"
sys.path.insert(0, str(HELPERS))
# test modules that other test files import from (``from test_cli_journeys import convnn``):
# on the path whichever files pytest collects, so that one file also runs alone
for folder in ("cli", "datamodules", "ablations"):
    sys.path.append(str(HELPERS.parent / folder))

# every neighbor index is checked against its table before a gather (Triton and PyTorch
# paths), so a path that forms an out-of-range index fails here rather than reading
# arbitrary memory on a GPU (convnn/backends/blocked_gather.py; off by default: it synchronizes)
os.environ.setdefault("CONVNN_DEBUG", "1")

# `make test` runs two pytest-xdist workers on the 2-core CI machine: each uses one torch
# thread, and so do the commands its tests start, so that the two do not oversubscribe it
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
