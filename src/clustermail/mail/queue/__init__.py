"""The virtual server's persistent relay queue: a SQLite file on its disk.

* :mod:`.schedule` — retry, delay-notice and expiry rules (pure, time is an input);
* :mod:`.dsn` — delivery status notifications (RFC 3464), pure;
* :mod:`.store` — the queue file: group-committed writes, fenced by the epoch like the
  mailbox databases; the admin CLI opens it directly for list/retry/delete;
* :mod:`.routing` — where a recipient goes: this virtual server, another one (its current
  address from the coordination store), or the smart host;
* :mod:`.runner` — the loop that delivers what is due and bounces what failed;
* :mod:`.delivery` — delivery into this virtual server's mailbox databases;
* :mod:`.tracking` — the message tracking log (every receive, delivery, relay, bounce),
  written by SMTP and the runner, searched by ``clustermail track``.
"""
