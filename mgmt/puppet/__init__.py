"""The Puppet front-end: a manifest compiled by the real Puppet, its catalog run on our engine.

compile.py runs `puppet catalog compile`; translate.py turns the catalog into our graph;
source.py is the agent's graph source (recompiles on edit). docs/puppet.md says what translates.
"""
