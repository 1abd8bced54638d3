"""Measurements: ROC and its operating points, intervals, epsilon lower bounds, the one-run bound, DP accounting."""
