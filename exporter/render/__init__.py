"""Rendering: metric families declared target by target, and the cached exposition."""
