"""Thin DVC stage entry points: load the config, call one `tada` function, write atomically."""
