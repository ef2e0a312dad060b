"""Tools around the operator: :func:`~convnn.tools.profile.profile` (parameters and
GFLOPs including top-k and gathers) and the special-case demo (``python -m convnn.tools.demo``)."""
