"""The pure core: scenario files read and validated, the plan, the wiring, the records.

Imports nothing else of the testbed; every layer above may use it.
"""
