"""The IMAP command handlers, one module per session state of RFC 3501 §6, each with
its part of the command table (:mod:`clustermail.mail.imap.command_table`).

* :mod:`.any_state` — CAPABILITY, NOOP, LOGOUT, ID;
* :mod:`.not_authenticated` — STARTTLS, LOGIN, AUTHENTICATE;
* :mod:`.authenticated` — SELECT/EXAMINE, mailbox management, STATUS, APPEND, IDLE,
  NAMESPACE, ENABLE, quotas;
* :mod:`.selected` — CHECK, CLOSE, UNSELECT, EXPUNGE, SEARCH, FETCH, STORE, COPY, MOVE.
"""
