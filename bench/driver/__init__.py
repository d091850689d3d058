"""The pieces of ``python -m bench``: processes, floors, the Kora and peer scenarios, report.

Every scenario emits rows ``{"scenario", "system", "metric", "value", "unit"}``.  ``system``
is ``kora``, ``pycrdt`` (pycrdt-websocket) or ``floor`` (what the machine does with no
product in the way).  A floor row carries the same scenario and metric as the figure it
bounds, so the table can print the ratio on one line.
"""
