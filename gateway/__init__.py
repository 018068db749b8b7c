"""bms-gateway: reads a JK BMS, derives safe limits and speaks an inverter's battery protocol."""

from importlib.metadata import PackageNotFoundError, version

try:
    # setuptools-scm writes the version from the git tags into the package metadata at install time.
    __version__ = version("bms-gateway")
except PackageNotFoundError:  # a source tree on sys.path that was never installed
    __version__ = "0.0.0+unknown"
