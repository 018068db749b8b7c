"""bms-gateway: reads a JK BMS, derives safe limits and speaks an inverter's battery protocol."""

from functools import cache


@cache
def _installed_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        # setuptools-scm writes the version from the git tags into the package metadata at install time.
        return version("bms-gateway")
    except PackageNotFoundError:  # a source tree on sys.path that was never installed
        return "0.0.0+unknown"


def __getattr__(name: str) -> str:
    # Looked up on first use, not at import: importlib.metadata takes tens of milliseconds, and a Ctrl-C during an
    # import that runs before the CLI's handler is a traceback (newcomer audit). `from gateway import __version__`
    # still works (PEP 562).
    if name == "__version__":
        return _installed_version()
    raise AttributeError(f"module 'gateway' has no attribute {name!r}")
