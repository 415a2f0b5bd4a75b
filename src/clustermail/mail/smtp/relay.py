"""Sending a message to another SMTP server (another virtual server, or the smart host).

The standard library's ``smtplib`` in a worker thread: the queue runner sends few
messages at a time, and smtplib already speaks EHLO, STARTTLS, SIZE, SMTPUTF8 and
reports per-recipient refusals. STARTTLS is opportunistic (used when offered,
certificates not verified: the virtual servers' are self-signed), as between MTAs.
"""

from __future__ import annotations

import asyncio
import smtplib
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass

from clustermail.mail.net.tls import client_context

RELAY_TIMEOUT = 60.0


@dataclass(frozen=True, slots=True)
class RelayResult:
    address: str
    delivered: bool
    permanent: bool
    code: str  # enhanced status code
    reply: str


def _enhanced(code: int, text: str) -> str:
    first = text.split(" ", 1)[0]
    parts = first.split(".")
    if len(parts) == 3 and all(p.isdigit() for p in parts) and parts[0] in "245":
        return first
    return f"{str(code)[0]}.0.0" if code else "4.4.1"


def _reply(code: int, msg: bytes | str) -> str:
    text = msg.decode(errors="replace") if isinstance(msg, bytes) else str(msg)
    return f"{code} {text}".replace("\n", " ")


def _control_character(address: str) -> bool:
    return any(ord(c) < 32 or ord(c) == 127 for c in address)


def send(
    host: str,
    port: int,
    helo: str,
    sender: str,
    recipients: Sequence[str],
    message: bytes,
    *,
    tls: ssl.SSLContext | None = None,
    timeout: float = RELAY_TIMEOUT,
) -> list[RelayResult]:
    """Blocking: one SMTP transaction; a result per recipient, in order. Connection
    failures and 4xx replies are temporary, 5xx permanent. A recipient that can never
    be sent (a control character in it; non-ASCII toward a server without SMTPUTF8,
    RFC 6531's 5.6.7) fails permanently on its own; nothing raises."""
    results: dict[str, RelayResult] = {}
    for a in recipients:
        if _control_character(a):
            results[a] = RelayResult(a, False, True, "5.1.3",
                                     "bad recipient address syntax (a control character)")
    if _control_character(sender):
        why = "bad sender address syntax (a control character)"
        return [results.get(a) or RelayResult(a, False, True, "5.1.7", why) for a in recipients]
    try:
        results.update(_transaction(host, port, helo, sender,
                                    [a for a in recipients if a not in results], message,
                                    tls, timeout))
    except Exception as exc:  # a bug or an odd reply: a deferral, never a crash
        text = f"cannot relay to {host}:{port}: {type(exc).__name__}: {exc}"
        results.update({a: RelayResult(a, False, False, "4.4.1", text)
                        for a in recipients if a not in results})
    return [results[a] for a in recipients]


def _transaction(
    host: str, port: int, helo: str, sender: str, recipients: list[str], message: bytes,
    tls: ssl.SSLContext | None, timeout: float,
) -> dict[str, RelayResult]:
    if not recipients:
        return {}
    out: dict[str, RelayResult] = {}
    try:
        with smtplib.SMTP(host, port, local_hostname=helo, timeout=timeout) as client:
            if client.sock is not None:
                client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client.ehlo()
            if client.has_extn("starttls"):
                client.starttls(context=tls or client_context())
                client.ehlo()
            options: list[str] = []
            utf8 = client.has_extn("smtputf8")
            if not utf8:
                # RFC 6531 section 3.2: such a recipient fails with 5.6.7, the others go.
                why = (f"{host}:{port} does not support SMTPUTF8: non-ASCII addresses are "
                       "not permitted there")
                unsendable = recipients if not sender.isascii() else [
                    a for a in recipients if not a.isascii()]
                out = {a: RelayResult(a, False, True, "5.6.7", why) for a in unsendable}
                recipients = [a for a in recipients if a not in out]
                if not recipients:
                    return out
            elif not (sender + "".join(recipients)).isascii():
                options.append("SMTPUTF8")
            refused = client.sendmail(sender, recipients, message, mail_options=options)
    except smtplib.SMTPRecipientsRefused as exc:
        return out | {a: _refusal(a, *exc.recipients.get(a, (450, b"refused")))
                      for a in recipients}
    except smtplib.SMTPResponseException as exc:  # sender refused, data refused, ...
        return out | {a: _refusal(a, exc.smtp_code, exc.smtp_error) for a in recipients}
    except smtplib.SMTPNotSupportedError as exc:
        text = f"{host}:{port} cannot take this message: {exc}"
        return out | {a: RelayResult(a, False, True, "5.6.7", text) for a in recipients}
    except (smtplib.SMTPException, OSError, ssl.SSLError) as exc:
        text = f"cannot relay to {host}:{port}: {exc}"
        return out | {a: RelayResult(a, False, False, "4.4.1", text) for a in recipients}
    for a in recipients:
        if a in refused:
            out[a] = _refusal(a, *refused[a])
        else:
            out[a] = RelayResult(a, True, False, "2.0.0", f"relayed to {host}:{port}")
    return out


def _refusal(address: str, code: int, msg: bytes | str) -> RelayResult:
    reply = _reply(code, msg)
    permanent = 500 <= code < 600
    return RelayResult(address, False, permanent, _enhanced(code, reply.split(" ", 1)[-1]), reply)


async def send_async(
    host: str,
    port: int,
    helo: str,
    sender: str,
    recipients: Sequence[str],
    message: bytes,
    *,
    timeout: float = RELAY_TIMEOUT,
) -> list[RelayResult]:
    return await asyncio.to_thread(
        send, host, port, helo, sender, recipients, message, timeout=timeout
    )
