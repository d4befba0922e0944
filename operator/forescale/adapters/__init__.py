"""Adapters to the outside world: each turns a foreign API into core types and core errors.

The decision core never imports these; the operator module wires them to it.
"""
