"""cutalign: align language models with natural-language judgments.

Contrastive Unlikelihood Training (CUT, arXiv 2312.14591) as a Hugging Face trainer,
with the baselines, data converters and tools around it.
"""

__version__ = "0.1.0"
