"""Routing policies: each gives a probability for every eligible model and learns online."""

from __future__ import annotations

from banditroute.policies.base import Policy, Probabilities
from banditroute.policies.fixed import FixedPolicy
from banditroute.policies.linucb import LinUCBPolicy
from banditroute.policies.uniform import UniformPolicy
from banditroute.policies.vw import VWPolicy

__all__ = ["FixedPolicy", "LinUCBPolicy", "Policy", "Probabilities", "UniformPolicy", "VWPolicy"]
