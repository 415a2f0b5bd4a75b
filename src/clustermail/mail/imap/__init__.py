"""IMAP4rev1 (RFC 3501) and the extensions we serve.

The pure protocol layer: :mod:`.framing` (bytes → commands), :mod:`.parser`
(command grammar → :mod:`.commands`), :mod:`.search` (SEARCH keys and their
evaluator), :mod:`.response` (values → wire bytes), :mod:`.sequence` and
:mod:`.mutf7`. No I/O, no storage.

The server, a thin shell around it over the mail store:

* :mod:`.server` — listeners and admission; one :mod:`.session` per connection;
* :mod:`.session` — the loop: read, parse, look the command up in the command table,
  enforce its rules (:mod:`.command_table`), run its handler, report changes;
* :mod:`.handlers` — one module of command handlers per session state;
* :mod:`.context` — what handlers work with (connection, state, selected mailbox);
* :mod:`.outcome` — how a command ends (OK, NO/BAD, end of connection);
* :mod:`.mailbox_view` — the selected mailbox as the client knows it (numbers, flags);
* :mod:`.fetch`, :mod:`.listing` — FETCH items, LIST/LSUB/STATUS answers;
* :mod:`.change_hub` — commit notifications from the store to the sessions;
* :mod:`.resource` — the ``imap4`` resource type.
"""
