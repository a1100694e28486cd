"""The online loop: the policy answers fresh instructions, a judge critiques, CUT learns, repeat.

`run_online(config, run_dir, iterations=K)` is the library entry point (prints nothing);
`cutalign online` is its command line.
"""

from cutalign.online.config import OnlineConfig, resolve_config
from cutalign.online.loop import OnlineResult, run_online
from cutalign.online.manifest import ConfigChangedError

__all__ = ["ConfigChangedError", "OnlineConfig", "OnlineResult", "resolve_config", "run_online"]
