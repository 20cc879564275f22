"""HTTP: the bounded server, its endpoints and the exporter-toolkit web config file."""
