"""Routing policies: each gives a probability for every eligible model and learns online.

Import each from its module (``banditroute.policies.vw``, ...): importing the package loads
none of them, so a command that needs no river or VW does not pay for importing them.
"""
