"""ONNX Runtime integration: execution-provider selection and one session per model version."""
