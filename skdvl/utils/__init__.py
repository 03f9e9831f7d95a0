"""Utilities for developers of valuers: the shared estimator checks."""
