"""IMAP4rev1 (RFC 3501) and the extensions we serve.

The pure protocol layer: :mod:`framing` (bytes → commands), :mod:`parser`
(command grammar → :mod:`commands`), :mod:`search` (SEARCH keys and their
evaluator), :mod:`response` (values → wire bytes), :mod:`sequence` and
:mod:`mutf7`. No I/O, no storage: the server is a thin shell around them.
"""
