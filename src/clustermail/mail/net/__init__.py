"""What SMTP, POP3 and IMAP4 share on the network side.

* :mod:`.listener` — listening sockets on the virtual server's address (plain with
  STARTTLS, implicit TLS), TCP_NODELAY, connection limits, idle timeouts, failed-login
  throttling;
* :mod:`.tls` — the virtual server's certificate (the administrator's, or a self-signed
  one kept on its disk) and the TLS contexts built from it;
* :mod:`.protocol_resource` — how a protocol resource finds its address, mail store,
  name and certificate, and reads the properties all three share.
"""
