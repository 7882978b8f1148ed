"""The parallel, event-driven executor: graph model, resource contract, per-vertex workers.

It imports neither `mgmt` nor `resources`: resources plug in through `engine.resource.register`.
"""
