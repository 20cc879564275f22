"""`python -m exporter.demo [--host HOST] [--port PORT]` runs the demo simulator on its own."""

from exporter.demo.story import main

if __name__ == "__main__":
    main()
