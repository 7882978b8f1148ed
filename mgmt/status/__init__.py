"""The agent's status: a model kept live from the engine's events (model.py), served over HTTP
(server.py: the status page, its API, server-sent events, /metrics), and read by `mgmt status`
(command.py). docs/operations.md shows the page.
"""
