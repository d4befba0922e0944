"""The operator: kopf wiring around the pure decision core.

Layers (an import-linter contract keeps them honest): :mod:`.kube` is the only module that
talks to the Kubernetes API; :mod:`.status` turns a decision into a status and events
without I/O; :mod:`.worker` runs one policy's decision cycle; :mod:`.handlers` only wires
kopf to the worker.
"""
