"""The built-in default of ``cutalign demo``: a synthetic judged fact world, and offline tiny assets.

:mod:`cutalign.demo.world` makes the judged data and scores models on it; :mod:`cutalign.demo.assets`
builds the tokenizer and the tiny models (also used by tests across the project).
"""
