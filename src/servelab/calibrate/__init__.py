"""Calibration of the simulator on the real platform: measure a model's profile
(``servelab profile``: cold-start parts, service time per batch and memory size) and validate
the simulator against real runs with identical arrivals (``recommend --verify``,
``benchmarks/bench_sim_validation.py``). It drives the real platform and the load generator,
so it sits above both and above the simulator (docs/architecture.md)."""
