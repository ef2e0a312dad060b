"""Settings for the whole test suite."""

import os

# every neighbor index is checked against its table before a gather (Triton and PyTorch
# paths), so a path that forms an out-of-range index fails here rather than reading
# arbitrary memory on a GPU (convnn/backends/gather.py; off by default: it synchronizes)
os.environ.setdefault("CONVNN_DEBUG", "1")
