"""The agent's status: a model kept live from the engine's events (model.py), served over HTTP
(server.py: the status page, its API, server-sent events, /metrics; unixsock.py: the status
socket until its first client, without the server's code), and read by `mgmt status`
(command.py). docs/operations.md shows the page.
"""
