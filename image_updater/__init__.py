"""image-updater: GitOps environment promotion by registry tags."""

from importlib.metadata import PackageNotFoundError, version

# The version lives in pyproject.toml only; the installed distribution's metadata carries it.
try:
    __version__ = version("image-updater")
except PackageNotFoundError:  # a source tree that was never installed (pip install -e .)
    __version__ = "0+unknown"
