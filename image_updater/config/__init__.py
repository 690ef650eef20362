"""Configuration: policy files (per app) and settings (global), loaded and validated once."""
