"""A local SMTP sink: accepts every e-mail and lists what it received over HTTP.

The embedded default mail server of `mppo dev up` (process `python -m notification_svc.smtp_sink`),
so the product sends real e-mail over SMTP with no outside mail server, and tests and people
can read what was sent.

- SMTP on `MPPO_SMTP_SINK_SMTP_ADDR` (default `127.0.0.1:8025`; when that default port is
  taken, a free port is used and announced at `GET /info`): EHLO/HELO, MAIL FROM, RCPT TO,
  DATA (dot-unstuffing), RSET, NOOP, VRFY, QUIT. Nothing is relayed anywhere.
- HTTP on `MPPO_SMTP_SINK_ADDR` (default `127.0.0.1:8026`):
  `GET /messages[?to=<address>][&message_id=<id>]` → `{"messages": [...]}` oldest first, each
  `{id, received_at, mail_from, rcpt_to, message_id, subject, from, to, headers, body}`;
  `DELETE /messages` clears them; `GET /info` → `{"smtp_addr", "http_addr", "count"}`;
  `GET /healthz` → 200.

Messages are kept in memory (the newest 10,000). The sink logs ids and counts, never
addresses.
"""
