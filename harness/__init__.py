"""Benchmark and evaluation harness for compressed text-to-image diffusion transformers.

Importing this package is cheap: torch and diffusers load only inside the commands that need them.
"""

__version__ = "0.1.0"
