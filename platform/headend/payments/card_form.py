"""What the browser's card form needs to turn a typed card into a token: the tenant's card
gateway, its publishable key and the address of its browser library (Stripe.js).

Card numbers never reach Headend: the page loads the provider's library, which sends the card
to the provider and hands back a token (a PaymentMethod or card token id) that the form posts
as `card_token`; `payments.services.save_card` attaches it to the subscriber's customer.

The library is Stripe.js (`templates/public/_card_form.html` drives it). Against a fake Stripe
(the gateway's `api_base` is not Stripe's) it is loaded from that server's `/js.stripe.com/v3/`,
where localstripe serves its stand-in.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from headend.errors import ValidationFailed
from headend.payments.services import gateway_for, routes

STRIPE_JS = "https://js.stripe.com/v3/"
STRIPE_API = "https://api.stripe.com"


def card_form_context(session: Session) -> dict | None:
    """{"plugin_id", "publishable_key", "js_url"} for the acting tenant's card gateway; None
    when no enabled gateway takes cards or it has no publishable key (no card form can work)."""
    if routes(session).get("card") is None:
        return None
    try:
        gateway = gateway_for(session, "card")
    except ValidationFailed:  # routed to a gateway that is off, or that does not take cards
        return None
    key = gateway.settings.get("publishable_key")
    if not gateway.plugin.saves_methods or not key:
        return None
    api_base = (gateway.settings.get("api_base") or STRIPE_API).rstrip("/")
    js_url = STRIPE_JS if api_base == STRIPE_API else f"{api_base}/js.stripe.com/v3/"
    return {"plugin_id": gateway.plugin_id, "publishable_key": key, "js_url": js_url}
