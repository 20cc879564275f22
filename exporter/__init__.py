"""Prometheus exporter for Amazon Macie classification jobs."""

__version__ = "0.1.0"
