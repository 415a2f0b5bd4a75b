"""SMTP on the virtual servers: aiosmtpd's state machine with our policy in handler hooks.

* :mod:`.policy` — limits, relay rules, Received header, message checks (pure);
* :mod:`.replies` — enhanced status codes (RFC 2034/3463) on every reply (pure);
* :mod:`.handler` — the aiosmtpd hooks: AUTH, MAIL, RCPT, DATA (durable before 250);
* :mod:`.server` — the aiosmtpd subclass (admission, enhanced codes) and the service
  that runs the inbound, submission and submissions ports plus the queue runner;
* :mod:`.relay` — the outbound client used by the queue runner;
* :mod:`.resource` — the ``smtp`` resource type.
"""
