"""Models: the zoo (built from code, exported to ONNX) and the content-addressed model store."""
