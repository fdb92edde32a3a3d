"""microgpt: the smallest complete GPT, in pure Python (scalar mode) and PyTorch (tensor mode)."""

__version__ = "0.1.0"
