"""Test support shared by the test tiers (fakes and real servers the tests run against).

The Kubernetes API emulator's fixtures are wired into tests/conftest.py with::

    from tests.support.kubeapi import kube_emulator, kube_emulator_factory  # noqa: F401
"""
