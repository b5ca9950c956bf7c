"""Drives a Confidant server with the official Segment and RudderStack Python SDKs.

Only the host is changed from a real shop's setup. Usage: drive.py BASE_URL WRITE_KEY
Prints, as JSON on standard output, what each SDK sent: its user and anonymous ids and the
messageIds it used, so the caller can check that every message arrived exactly once.
"""

import json
import sys
import uuid

from segment.analytics import Client as SegmentClient
from rudderstack.analytics.client import Client as RudderClient

base, write_key = sys.argv[1], sys.argv[2]
errors = []


def on_error(error, items):
    errors.append(f"{error!r} ({len(items)} messages)")


def drive(name, client):
    anon = f"{name}-device-{uuid.uuid4()}"
    user = f"{name}-user-{uuid.uuid4().hex[:8]}"
    ids = []

    def mid():
        m = str(uuid.uuid4())
        ids.append(m)
        return m

    # An anonymous visit, then sign-in, then a purchase.
    client.page(anonymous_id=anon, name="Accueil", properties={"path": "/"}, message_id=mid())
    for sku in ("SKU-1", "SKU-2", "SKU-3"):
        client.track(anonymous_id=anon, event="Product Viewed",
                     properties={"product_id": sku, "price": 19.9, "currency": "EUR"}, message_id=mid())
    client.identify(user_id=user, anonymous_id=anon, message_id=mid(),
                    traits={"email": f"{user}@example.fr", "firstName": "Léa", "phone": "+33612345678"})
    client.track(user_id=user, event="Order Completed", message_id=mid(),
                 properties={"order_id": f"{user}-1", "revenue": 59.7, "currency": "EUR",
                             "products": [{"product_id": "SKU-1", "quantity": 3, "price": 19.9}]})
    # Sent twice, as a retrying client would: stored once.
    dup = mid()
    client.track(user_id=user, event="Coupon Applied", properties={"coupon": "BIENVENUE"}, message_id=dup)
    client.track(user_id=user, event="Coupon Applied", properties={"coupon": "BIENVENUE"}, message_id=dup)
    # Let the SDK make its own ids, as most shops do.
    for i in range(20):
        client.track(user_id=user, event="Page Scrolled", properties={"depth": i})
    client.flush()
    client.join()
    return {"user_id": user, "anonymous_id": anon, "message_ids": ids, "sdk_generated": 20}


out = {
    "segment": drive("segment", SegmentClient(write_key=write_key, host=base, gzip=True, on_error=on_error, max_retries=3)),
    "rudderstack": drive("rudder", RudderClient(write_key=write_key, host=base, gzip=True, on_error=on_error, max_retries=3)),
    "errors": errors,
}
print(json.dumps(out))
