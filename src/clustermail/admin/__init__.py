"""Layer 4: administration (CLI, later the REST API and web console).

Admin code writes intents into the coordination store and reads state from
it; it never reaches into a node's memory.
"""
