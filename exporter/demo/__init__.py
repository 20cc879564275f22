"""The demo: a simulated Macie (with STS and AWS Organizations) in its real wire formats
(`exporter.demo.simulator`), and the demo account's story it serves for `--demo`
(`exporter.demo.story`; `python -m exporter.demo --port 9999` runs it on its own)."""
