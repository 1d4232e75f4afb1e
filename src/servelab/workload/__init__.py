"""Arrival processes: numpy arrays of arrival times (Poisson, MMPP, ramps, traces)."""
