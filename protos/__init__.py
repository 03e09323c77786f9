"""The CounterGuard wire contract: ``.proto`` files and the Python code generated from them."""
