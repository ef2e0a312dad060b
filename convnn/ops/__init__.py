"""The math of the ConvNN operator, shared by every backend: token geometry and candidate
tables, positional encodings, similarities, top-k selection, gathers and aggregation."""
