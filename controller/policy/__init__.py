"""Policies: the computer-usage rules of a service centre as typed, validated YAML.

:mod:`controller.policy.model` is the shape of a policy file; the loader, the national calendar,
the software catalogue and the store of applied versions live beside it.
"""
