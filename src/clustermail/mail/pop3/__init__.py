"""POP3 (RFC 1939, CAPA RFC 2449, AUTH PLAIN RFC 5034, STLS RFC 2595), our own.

* :mod:`.protocol` — the session state machine, pure (bytes in, actions out);
* :mod:`.server` — the asyncio shell: TLS, directory, maildrop lock, mail store;
* :mod:`.resource` — the ``pop3`` resource type.
"""
