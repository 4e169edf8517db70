"""Verify deliveries from ue-flow in the receiving application.

Typical use::

    from ue_flow.receiver import Receiver, TrustedSystem, Unauthorized, Duplicate

    receiver = Receiver({"mitxonline": TrustedSystem(key, secrets=(secret,))})
    envelope = receiver.verify(body, headers)

Respond to Unauthorized with 401, to ue_flow.PayloadError with 400 and to
Duplicate with 200.
The Django view decorator lives in ue_flow.receiver.django, which imports
Django only when it is used, and the WSGI middleware in ue_flow.receiver.wsgi.
"""

from __future__ import annotations

from ..errors import PayloadError
from .dedup import (
    DuplicateStore,
    DuplicateStoreError,
    MemoryDuplicateStore,
    RedisDuplicateStore,
)
from .envelope import (
    Envelope,
    EventData,
    Line,
    PostrefundData,
    PostsaleData,
    PresaleData,
    Product,
    Refund,
    RefundLine,
    User,
)
from .verify import Duplicate, Receiver, TrustedSystem, Unauthorized

__all__ = [
    "Duplicate",
    "DuplicateStore",
    "DuplicateStoreError",
    "Envelope",
    "EventData",
    "Line",
    "MemoryDuplicateStore",
    "PayloadError",
    "PostrefundData",
    "PostsaleData",
    "PresaleData",
    "Product",
    "Receiver",
    "RedisDuplicateStore",
    "Refund",
    "RefundLine",
    "TrustedSystem",
    "Unauthorized",
    "User",
]
