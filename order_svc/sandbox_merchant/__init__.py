"""The sandbox merchant: a local merchant backend the order service places orders with.

Run: ``python -m order_svc.sandbox_merchant`` (listens on ``MPPO_MERCHANT_ADDR``, default
``127.0.0.1:8091``). See ``app.py`` for the HTTP API and ``catalogue.py`` for the default
catalogue. State lives in memory, or in the JSON file ``MPPO_MERCHANT_STATE_FILE`` when set
(rewritten atomically after every change and loaded at start, so it survives a restart).
"""
