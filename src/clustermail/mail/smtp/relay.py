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
    """Blocking: one SMTP transaction; a result per recipient. Connection failures and
    4xx replies are temporary, 5xx permanent."""
    try:
        with smtplib.SMTP(host, port, local_hostname=helo, timeout=timeout) as client:
            if client.sock is not None:
                client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client.ehlo()
            if client.has_extn("starttls"):
                client.starttls(context=tls or client_context())
                client.ehlo()
            options: list[str] = []
            if client.has_extn("smtputf8") and not (sender + "".join(recipients)).isascii():
                options.append("SMTPUTF8")
            refused = client.sendmail(sender, list(recipients), message, mail_options=options)
    except smtplib.SMTPRecipientsRefused as exc:
        return [_refusal(a, *exc.recipients.get(a, (450, b"refused"))) for a in recipients]
    except smtplib.SMTPResponseException as exc:  # sender refused, data refused, ...
        return [_refusal(a, exc.smtp_code, exc.smtp_error) for a in recipients]
    except smtplib.SMTPNotSupportedError as exc:  # UTF-8 addresses, no SMTPUTF8 there
        text = f"{host}:{port} cannot take this message: {exc}"
        return [RelayResult(a, False, True, "5.6.7", text) for a in recipients]
    except (smtplib.SMTPException, OSError, ssl.SSLError) as exc:
        text = f"cannot relay to {host}:{port}: {exc}"
        return [RelayResult(a, False, False, "4.4.1", text) for a in recipients]
    out = []
    for a in recipients:
        if a in refused:
            out.append(_refusal(a, *refused[a]))
        else:
            out.append(RelayResult(a, True, False, "2.0.0", f"relayed to {host}:{port}"))
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
