"""What a memory size buys: AWS Lambda's rule, shared by the platform's limits and the simulator.

Memory is the one knob: 128 to 10,240 MB, and CPU in proportion — 1 vCPU at 1,769 MB, 6 vCPUs at
10,240 MB (AWS Lambda Developer Guide, "Configuring Lambda function memory"). Memory in MB.
"""

from __future__ import annotations

MIN_MEMORY_MB = 128
MAX_MEMORY_MB = 10240
# Lambda's published anchors: 1 vCPU at 1,769 MB, 6 vCPUs at the 10,240 MB maximum.
ONE_VCPU_MEMORY_MB = 1769
MAX_VCPUS = 6.0


def cpus_for_memory(memory_mb: int) -> float:
    """vCPUs that Lambda gives ``memory_mb``: piecewise linear through (0, 0), (1769, 1), (10240, 6).

    AWS publishes the two anchors and "proportional to memory"; between 1,769 and 10,240 MB the
    slope is 5/8471 vCPU per MB, within 4% of 1/1769, so the curve is continuous and hits both.
    """
    if memory_mb <= ONE_VCPU_MEMORY_MB:
        return memory_mb / ONE_VCPU_MEMORY_MB
    slope = (MAX_VCPUS - 1.0) / (MAX_MEMORY_MB - ONE_VCPU_MEMORY_MB)
    return min(MAX_VCPUS, 1.0 + (memory_mb - ONE_VCPU_MEMORY_MB) * slope)
