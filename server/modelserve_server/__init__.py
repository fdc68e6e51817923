"""modelserve's inference server: the Open Inference Protocol (V2) over ONNX Runtime."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("modelserve")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"
