"""scalekit: which MedNeXt to train on your data and your GPU, found by measurement."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("scalekit")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"
