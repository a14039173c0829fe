"""Failure diagnosis internals: the rule table (:mod:`.rules`), the reasons drawn from
the evidence (:mod:`.reasons`) and the model's classification of what no rule knows
(:mod:`.model`). The entry points stay in :mod:`antrieb.converge.diagnose`.
"""
