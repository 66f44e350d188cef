"""The demo: composes the pipeline end to end (``inferledger demo``).

It only composes: the trace and the fleet come from :mod:`services.ingest.trace`, the
processors run under :mod:`services.runtime.supervise`, the tables from
:mod:`services.ledger.report`; :mod:`services.demo.html` writes the HTML report.
"""
