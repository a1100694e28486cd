"""`cutalign serve`: an OpenAI-compatible server for a local model, merged checkpoint or adapter.

Any OpenAI client (or `cutalign.generation.OpenAIGenerator`) talks to it; at scale, `vllm serve`
exposes the same interface.
"""

from cutalign.serve.app import create_app
from cutalign.serve.server import serve

__all__ = ["create_app", "serve"]
