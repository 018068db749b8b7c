"""Why the gateway cannot reach its MQTT broker, in one line with a ``hint:`` the user can act on.

paho-mqtt reports a failed connection attempt through ``on_connect_fail`` without the exception; the callback
runs inside paho's ``except OSError`` block, so the exception is still the one being handled
(``sys.exception()``). A certificate the gateway does not trust, a certificate for another name and a broker
that refuses the TCP connection need different fixes: "cannot connect" alone left the user guessing
(security audit I1).
"""

from __future__ import annotations

import socket
import ssl
from typing import Final

from gateway.config import MqttConfig

HOST_MISMATCH_CODES: Final = frozenset({62, 64})
"""OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH and X509_V_ERR_IP_ADDRESS_MISMATCH."""


def connect_failure(error: BaseException | None, config: MqttConfig) -> str:
    """One line (without the ``mqtt:`` prefix) saying why the connection to the broker failed, with a hint."""
    broker = f"{config.host}:{config.port}"
    if isinstance(error, ssl.SSLCertVerificationError):
        detail = error.verify_message or str(error)
        if error.verify_code in HOST_MISMATCH_CODES:
            return (
                f"cannot connect to {broker}: TLS host name mismatch, the broker's certificate is not for "
                f"{config.host} ({detail}); hint: set mqtt.host to a name the certificate carries, or "
                "mqtt.tls.insecure: true to skip the name check"
            )
        trusted = config.tls.ca_file or "the system's CAs"
        return (
            f"cannot connect to {broker}: TLS certificate verify failed ({detail}); hint: set mqtt.tls.ca_file "
            f"to the CA certificate that signed the broker's (now: {trusted})"
        )
    if isinstance(error, ssl.SSLError):
        return (
            f"cannot connect to {broker}: TLS handshake failed ({error.reason or error}); hint: is {config.port} "
            "the broker's TLS listener? (mqtt.port, usually 8883 with TLS)"
        )
    if isinstance(error, ConnectionRefusedError):
        return (
            f"cannot connect to {broker}: connection refused; hint: is the broker running and listening on port "
            f"{config.port} of {config.host}? (mqtt.host, mqtt.port)"
        )
    if isinstance(error, socket.gaierror):
        return f"cannot connect to {broker}: host name {config.host} not found; hint: check mqtt.host"
    if isinstance(error, TimeoutError):
        return (
            f"cannot connect to {broker}: no answer in time; hint: check mqtt.host, mqtt.port and any firewall "
            "in between"
        )
    if isinstance(error, OSError):
        return f"cannot connect to {broker}: {error.strerror or error}"
    return f"cannot connect to {broker}"


def refusal_hint(reason: object) -> str:
    """A hint for the broker's refusal in CONNACK (``Not authorized``, ``Bad user name or password``, ...)."""
    text = str(reason).lower()
    if "authori" in text or "password" in text:
        return "hint: check mqtt.username and mqtt.password, and the broker's users"
    if "identifier" in text:
        return "hint: the broker does not accept the client id; set mqtt.client_id"
    return "hint: see the broker's log"
