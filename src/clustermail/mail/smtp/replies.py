"""Enhanced status codes (RFC 3463) on every SMTP reply (RFC 2034), pure.

Our hooks write replies with codes; aiosmtpd's own replies ("503 Error: send HELO
first") get one here by reply code, with a few refinements by text. RFC 2034 exempts the
greeting and the replies to HELO/EHLO, and continuation replies (334, 354) carry none.
"""

from __future__ import annotations

import re

_HAS_ENHANCED = re.compile(r"^\d{3}[ -][245]\.\d{1,3}\.\d{1,3}(?: |$)")
_BY_CODE = {
    "211": "2.0.0",
    "214": "2.0.0",
    "220": "2.0.0",
    "221": "2.0.0",
    "235": "2.7.0",
    "250": "2.0.0",
    "251": "2.1.5",
    "252": "2.5.0",
    "421": "4.3.0",
    "450": "4.2.0",
    "451": "4.3.0",
    "452": "4.3.1",
    "454": "4.7.0",
    "500": "5.5.2",
    "501": "5.5.4",
    "502": "5.5.1",
    "503": "5.5.1",
    "504": "5.5.4",
    "530": "5.7.0",
    "534": "5.7.9",
    "535": "5.7.8",
    "538": "5.7.11",
    "550": "5.0.0",
    "552": "5.3.4",
    "553": "5.1.3",
    "554": "5.0.0",
    "555": "5.5.4",
}
_BY_TEXT = (
    ("line too long", "5.5.6"),  # a DATA line over 998 octets (RFC 5322 2.1.1)
    ("too much mail data", "5.3.4"),
    ("message size exceeds", "5.3.4"),
    ("lack of security", "5.7.0"),
    ("nested mail", "5.5.1"),
    ("need mail", "5.5.1"),
    ("need rcpt", "5.5.1"),
)
_NO_CODE = ("334", "354")


def with_enhanced(reply: str) -> str:
    """``reply`` with an enhanced status code after the reply code, if it lacks one."""
    if len(reply) < 3 or not reply[:3].isdigit() or reply[:3] in _NO_CODE:
        return reply
    if _HAS_ENHANCED.match(reply):
        return reply
    code, sep, text = reply[:3], reply[3:4] or " ", reply[4:]
    enhanced = _BY_CODE.get(code)
    lowered = text.lower()
    for needle, better in _BY_TEXT:
        if needle in lowered:
            enhanced = better
            break
    if enhanced is None:
        enhanced = f"{code[0]}.0.0"
    text = text.removeprefix("Error: ").removeprefix("Error:")
    return f"{code}{sep}{enhanced} {text}".rstrip()
