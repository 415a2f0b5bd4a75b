"""Property schemas of the mail layer's resource types, for configuration validation.

Imported by the admin layer (the CLI, which also runs `node run`) before any
configuration is parsed, so a cluster file may use these types. The cluster
layer never imports the mail layer; it only looks types up in its registry.
"""

from __future__ import annotations
