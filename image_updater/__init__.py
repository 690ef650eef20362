"""image-updater: GitOps environment promotion by registry tags."""

__version__ = "0.1.0"
