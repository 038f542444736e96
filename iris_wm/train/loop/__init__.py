"""The online IRIS loop (``iris-wm run``): its settings (``config``), the loop itself (``online``), its checkpoint
and metrics log (``state``) and its periodic pictures (``media``)."""
