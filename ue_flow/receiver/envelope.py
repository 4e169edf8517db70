"""Typed, frozen dataclasses for a received envelope, with money as Decimal."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

import jsonschema

from ..errors import PayloadError
from ..schemas import describe_error, envelope_validator

#: The values of an envelope's ``type``.
WIRE_TYPES = ("presale", "postsale", "postrefund")


@dataclass(frozen=True)
class User:
    """The purchaser. ``global_id`` and ``name`` are None when UE omits them."""

    id: int
    username: str
    email: str | None
    first_name: str
    last_name: str
    global_id: str | None = None
    name: str | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> User:
        """Build from a valid ``user`` object."""
        return cls(
            id=data["id"],
            username=data["username"],
            email=data["email"],
            first_name=data["first_name"],
            last_name=data["last_name"],
            global_id=data.get("global_id"),
            name=data.get("name"),
        )


@dataclass(frozen=True)
class Product:
    """A product; ``system_data`` is the JSON value its owning system defined, as parsed.

    The optional fields are None when UE omits them.
    """

    id: int
    sku: str
    name: str
    description: str
    system_data: Any
    price: Decimal
    system: str | int | None = None
    details_url: str | None = None
    image_metadata: dict[str, Any] | None = None
    deleted_by_cascade: bool | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Product:
        """Build from a valid product object."""
        return cls(
            id=data["id"],
            sku=data["sku"],
            name=data["name"],
            description=data["description"],
            system_data=data["system_data"],
            price=Decimal(data["price"]),
            system=data.get("system"),
            details_url=data.get("details_url"),
            image_metadata=data.get("image_metadata"),
            deleted_by_cascade=data.get("deleted_by_cascade"),
        )


@dataclass(frozen=True)
class Line:
    """One order line. ``unit_price`` is before tax and discounts, ``total_price`` is charged."""

    id: int
    quantity: int
    item_description: str
    unit_price: Decimal
    total_price: Decimal
    product: Product

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Line:
        """Build from a valid line object."""
        return cls(
            id=data["id"],
            quantity=data["quantity"],
            item_description=data["item_description"],
            unit_price=Decimal(data["unit_price"]),
            total_price=Decimal(data["total_price"]),
            product=Product.from_dict(data["product"]),
        )


@dataclass(frozen=True)
class PresaleData:
    """The data of a ``presale`` envelope: a product added to or removed from a basket."""

    action: Literal["add", "remove"]
    product: Product

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PresaleData:
        """Build from valid presale data."""
        return cls(action=data["action"], product=Product.from_dict(data["product"]))


@dataclass(frozen=True)
class PostsaleData:
    """The data of a ``postsale`` envelope: a completed order.

    ``lines`` contains only the receiving system's lines, while
    ``total_price_paid`` is the whole order's total.
    """

    reference_number: str
    total_price_paid: Decimal
    state: Literal["fulfilled"]
    lines: tuple[Line, ...]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PostsaleData:
        """Build from valid postsale data."""
        return cls(
            reference_number=data["reference_number"],
            total_price_paid=Decimal(data["total_price_paid"]),
            state=data["state"],
            lines=tuple(Line.from_dict(line) for line in data["lines"]),
        )


@dataclass(frozen=True)
class RefundLine:
    """The amount refunded for one line, named by the line's ``id``."""

    line_id: int
    amount: Decimal


@dataclass(frozen=True)
class Refund:
    """One refund: its total across the whole order and the amount per line."""

    total_refunded: Decimal
    lines: tuple[RefundLine, ...]
    reason: str | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Refund:
        """Build from a valid ``refund`` object."""
        lines = tuple(
            RefundLine(line_id=line["line_id"], amount=Decimal(line["amount"]))
            for line in data["lines"]
        )
        return cls(
            total_refunded=Decimal(data["total_refunded"]),
            lines=lines,
            reason=data.get("reason"),
        )


@dataclass(frozen=True)
class PostrefundData:
    """The data of a ``postrefund`` envelope: the order as in a postsale, and the refund."""

    reference_number: str
    total_price_paid: Decimal
    state: Literal["refunded", "partially_refunded"]
    lines: tuple[Line, ...]
    refund: Refund

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PostrefundData:
        """Build from valid postrefund data."""
        return cls(
            reference_number=data["reference_number"],
            total_price_paid=Decimal(data["total_price_paid"]),
            state=data["state"],
            lines=tuple(Line.from_dict(line) for line in data["lines"]),
            refund=Refund.from_dict(data["refund"]),
        )


EventData = PresaleData | PostsaleData | PostrefundData

_DATA_CLASSES: dict[str, type[PresaleData] | type[PostsaleData] | type[PostrefundData]] = {
    "presale": PresaleData,
    "postsale": PostsaleData,
    "postrefund": PostrefundData,
}


@dataclass(frozen=True)
class Envelope:
    """A delivery body: the five envelope keys, typed.

    ``system_key`` is left out of the repr so that logging an envelope does
    not log the key. ``webhook_id`` comes from the ``webhook-id`` header,
    not from the body; Receiver.verify sets it when the header is present.
    """

    system_slug: str
    system_key: str = field(repr=False)
    type: Literal["presale", "postsale", "postrefund"]
    user: User
    data: EventData
    webhook_id: str | None = None

    @classmethod
    def from_dict(cls, envelope: Any, *, webhook_id: str | None = None) -> Envelope:
        """Validate a parsed envelope against schemas/envelope.json and build it.

        Raises PayloadError naming the JSON path and the rule broken; its
        event is the envelope's ``type`` when that is valid, else
        ``"envelope"``.
        """
        validate_envelope(envelope)

        wire_type = envelope["type"]
        return cls(
            system_slug=envelope["system_slug"],
            system_key=envelope["system_key"],
            type=wire_type,
            user=User.from_dict(envelope["user"]),
            data=_DATA_CLASSES[wire_type].from_dict(envelope["data"]),
            webhook_id=webhook_id,
        )


def validate_envelope(envelope: Any) -> None:
    """Raise PayloadError unless ``envelope`` is valid against schemas/envelope.json."""
    validator = envelope_validator()
    fields = envelope if isinstance(envelope, dict) else {}
    wire_type = fields.get("type")
    event = wire_type if wire_type in WIRE_TYPES else "envelope"
    try:
        error = jsonschema.exceptions.best_match(validator.iter_errors(envelope))
        if error is None:
            return

        rule = describe_error(error)
    except RecursionError as recursion:
        # json.loads accepts nesting close to the recursion limit, which
        # jsonschema, recursing once per level and more, can then exceed.
        raise PayloadError(event, "$", "the envelope nests too deeply to validate") from recursion

    # A rule can quote the value it is about; PayloadError messages are
    # logged and sent back as 400 bodies, so the key is masked.
    key = fields.get("system_key")
    if isinstance(key, str) and key:
        rule = rule.replace(key, "***")

    raise PayloadError(event, error.json_path, rule)
