"""The Grafana dashboard for the exporter, built as code (a dev tool, not part of the package)."""
