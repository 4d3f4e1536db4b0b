"""Checks (自动比对) and the measure catalogue: the hub's main use by approval systems.

`CheckService` (service.py) answers from the in-memory check index (projections/checkindex*)
with the decision logic (decide.py) and records every answer in the usage log (usage.py);
catalogue.py seeds and changes the measure catalogue; api.py and fastpath.py serve HTTP.
"""
