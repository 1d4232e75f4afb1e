"""Runtimes: one interface to run a model (onnxruntime first, torch second)."""
