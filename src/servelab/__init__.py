"""servelab: serve a model as a serverless function on one machine, and measure how to serve it.

Public entry points are re-exported here; everything else lives in the sub-packages:

- ``servelab.models``    model zoo (built from code, exported to ONNX) and the model store
- ``servelab.runtimes``  one interface to run a model: onnxruntime (default) or torch
- ``servelab.platform``  the local serverless platform (functions, instances, meter)
- ``servelab.workload``  arrival processes (Poisson, MMPP, traces)
- ``servelab.loadgen``   the open-loop load generator
- ``servelab.analysis``  metrics, cost models and reports
"""

from servelab.errors import ServelabError

__version__ = "0.1.0"
__all__ = ["ServelabError", "__version__"]
