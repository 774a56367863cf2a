"""Named listeners, as Kafka's ``listeners`` / ``advertised.listeners``. Pure, no I/O.

A broker binds every listener of ``listeners=INTERNAL://0.0.0.0:9092,EXTERNAL://:19092``
and registers the addresses of ``advertised.listeners`` (default: the listeners) in its
``/brokers/ids/<id>`` znode. A Metadata request is answered with every broker's address on
the listener the request arrived on (Kafka's rule), so clients inside a container network
and clients on the host each get addresses they can reach; replica fetchers use the
``inter.broker.listener.name`` endpoint. Only PLAINTEXT exists, so the security-protocol
map is checked but changes nothing.

``ListenerPlan.single`` is the older ``--listen HOST:PORT`` / ``--advertise HOST:PORT``:
one listener named PLAINTEXT, advertised as before (the bound address fills in what
``--advertise`` leaves out). A bad value raises ``InvalidConfigurationError`` naming the
setting; nothing here guesses.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass

from proto.errors import InvalidConfigurationError

__all__ = [
    "CURRENT_LISTENER",
    "DEFAULT_LISTENER_NAME",
    "Endpoint",
    "ListenerPlan",
    "parse_endpoint",
    "parse_endpoints",
    "parse_protocol_map",
]

DEFAULT_LISTENER_NAME = "PLAINTEXT"
_NAME = re.compile(r"[A-Za-z0-9_-]+")
_ENDPOINT = re.compile(
    r"(?P<name>[^:/]*)://(?:\[(?P<v6>[0-9A-Za-z:.%_-]*)\]|(?P<host>[^:\[\]/]*)):(?P<port>-?\d+)"
)
_WILDCARDS = ("0.0.0.0", "::")

# The listener the current connection arrived on. ``Broker.handle_connection`` sets it in
# each connection's task (trio gives every task its own context), so handlers read it
# without every request signature growing a parameter.
CURRENT_LISTENER: ContextVar[str] = ContextVar("minibroker_listener")


@dataclass(frozen=True, slots=True)
class Endpoint:
    """``NAME://host:port``. An empty host means every interface when bound."""

    name: str
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.name}://{host}:{self.port}"


def parse_endpoint(text: str, setting: str = "listeners") -> Endpoint:
    match = _ENDPOINT.fullmatch(text.strip())
    if match is None:
        raise InvalidConfigurationError(
            f"{setting}: {text.strip()!r} is not NAME://HOST:PORT (e.g. INTERNAL://0.0.0.0:9092)"
        )
    name = match["name"].upper()
    if not _NAME.fullmatch(name):
        raise InvalidConfigurationError(
            f"{setting}: listener name {match['name']!r} must be letters, digits, _ or -"
        )
    port = int(match["port"])
    if not 0 <= port <= 65535:
        raise InvalidConfigurationError(f"{setting}: {text.strip()!r}: port out of range")
    host = match["v6"] if match["v6"] is not None else match["host"]
    return Endpoint(name, host, port)


def parse_endpoints(value: str, setting: str) -> tuple[Endpoint, ...]:
    """A comma-separated list with unique listener names (Kafka requires them)."""
    items = [item for item in value.split(",") if item.strip()]
    if not items:
        raise InvalidConfigurationError(f"{setting}: no listener given")
    endpoints = tuple(parse_endpoint(item, setting) for item in items)
    names = [e.name for e in endpoints]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InvalidConfigurationError(f"{setting}: listener names repeat: {', '.join(dupes)}")
    return endpoints


def parse_protocol_map(value: str) -> dict[str, str]:
    """``listener.security.protocol.map=INTERNAL:PLAINTEXT,EXTERNAL:PLAINTEXT``."""
    out: dict[str, str] = {}
    for item in value.split(","):
        if not item.strip():
            continue
        name, sep, protocol = item.strip().partition(":")
        if not sep or not _NAME.fullmatch(name.strip()):
            raise InvalidConfigurationError(
                f"listener.security.protocol.map: {item.strip()!r} is not NAME:PROTOCOL"
            )
        if protocol.strip().upper() != "PLAINTEXT":
            raise InvalidConfigurationError(
                f"listener.security.protocol.map: {protocol.strip()!r} for {name.strip()}: "
                "only PLAINTEXT is supported"
            )
        out[name.strip().upper()] = "PLAINTEXT"
    return out


@dataclass(frozen=True, slots=True)
class ListenerPlan:
    """What a broker binds, what it registers, and which listener brokers talk over.

    ``advertised`` may hold port 0 or an empty host, filled from the bound sockets by
    ``advertise`` once they are bound.
    """

    bind: tuple[Endpoint, ...]
    advertised: tuple[Endpoint, ...]
    inter_broker: str
    # The single form advertises the bound host where --advertise gives none (as before).
    advertise_bound_host: bool = False

    @classmethod
    def single(
        cls,
        host: str,
        port: int,
        advertised_host: str | None = None,
        advertised_port: int | None = None,
    ) -> ListenerPlan:
        """The older one-listener form; behaves exactly as before listeners existed."""
        name = DEFAULT_LISTENER_NAME
        return cls(
            (Endpoint(name, host, port),),
            (Endpoint(name, advertised_host or "", advertised_port or 0),),
            name,
            advertise_bound_host=True,
        )

    @classmethod
    def from_settings(
        cls,
        listeners: tuple[Endpoint, ...],
        advertised: tuple[Endpoint, ...] | None = None,
        inter_broker: str | None = None,
        protocol_map: Mapping[str, str] | None = None,
    ) -> ListenerPlan:
        """Kafka's checks: advertised names are bound listeners, none advertises the
        wildcard address, the inter-broker listener is advertised, ports don't clash."""
        names = [e.name for e in listeners]
        bound_at: dict[tuple[str, int], str] = {}
        for e in listeners:
            if e.port and (e.host, e.port) in bound_at:
                raise InvalidConfigurationError(
                    f"listeners: {e.name} and {bound_at[e.host, e.port]} both bind "
                    f"{e.host or '*'}:{e.port}"
                )
            bound_at[e.host, e.port] = e.name
        adv = listeners if advertised is None else advertised
        for e in adv:
            if e.name not in names:
                raise InvalidConfigurationError(
                    f"advertised.listeners: {e.name} is not one of listeners ({', '.join(names)})"
                )
            if e.host in _WILDCARDS:
                raise InvalidConfigurationError(
                    f"advertised.listeners: {e} uses the non-routable address {e.host}; "
                    "advertise an address clients can reach (set advertised.listeners)"
                )
        adv_names = [e.name for e in adv]
        if inter_broker is None:
            # Kafka's default is the PLAINTEXT listener; a lone listener is unambiguous too.
            if DEFAULT_LISTENER_NAME not in adv_names and len(adv_names) != 1:
                raise InvalidConfigurationError(
                    "set inter.broker.listener.name to the listener brokers use among "
                    f"themselves (one of {', '.join(adv_names)})"
                )
            inter_broker = DEFAULT_LISTENER_NAME if len(adv_names) != 1 else adv_names[0]
        inter_broker = inter_broker.strip().upper()
        if inter_broker not in adv_names:
            raise InvalidConfigurationError(
                f"inter.broker.listener.name={inter_broker} must be one of the advertised "
                f"listeners ({', '.join(adv_names)})"
            )
        if protocol_map is not None:
            unmapped = [n for n in names if n not in protocol_map and n != DEFAULT_LISTENER_NAME]
            if unmapped:
                raise InvalidConfigurationError(
                    "listener.security.protocol.map: no protocol for listener "
                    + ", ".join(unmapped)
                )
        return cls(tuple(listeners), tuple(adv), inter_broker)

    def advertise(
        self, bound: Mapping[str, tuple[str, int]], hostname: str
    ) -> tuple[Endpoint, ...]:
        """The endpoints to register, given each listener's bound (host, port).

        Port 0 takes the bound port. An empty host takes ``hostname`` in the listener
        form (Kafka advertises the machine's name) and the bound host in the single form.
        """
        out: list[Endpoint] = []
        for e in self.advertised:
            bound_host, bound_port = bound[e.name]
            host = e.host or (bound_host if self.advertise_bound_host else hostname)
            out.append(Endpoint(e.name, host, e.port or bound_port))
        return tuple(out)

    def inter_broker_endpoint(self, endpoints: tuple[Endpoint, ...]) -> Endpoint:
        return next(e for e in endpoints if e.name == self.inter_broker)
