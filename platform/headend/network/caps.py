"""Data caps and usage periods: which services passed their package's data limit (or the
subscriber's own) in the current usage period, and so are throttled to the throttled speeds or
cut until the period ends.

The usage period is the subscription's billing period: the cap resets when a new one starts,
and usage-based billing charges each ended period. Sizes are decimal, as ISPs advertise them:
1 GB = 10^9 bytes, 1 MB = 10^6, 1 KB = 10^3. Upload counts when the package says so.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict

import sqlalchemy as sa
from sqlalchemy.orm import Session

from headend.billing import drafting, periods
from headend.billing.models import InvoiceDefaults
from headend.catalog.models import InternetProfile
from headend.db import among
from headend.network.models import UsageDaily
from headend.subscribers.models import ServiceInstance, Subscription

GB = 10**9
THROTTLED, CAPPED = "throttled", "capped"


def usage_period(subscription: Subscription, defaults: InvoiceDefaults,
                 on: dt.date) -> periods.Period:
    """The subscription's billing period containing `on` (its usage period)."""
    day = drafting.period_day(subscription, defaults)
    fixed = bool(subscription.bill_day) or defaults.billing_mode == "fixed"
    anchor = periods.billing_anchor(drafting.start_date(subscription),
                                    "fixed" if fixed else "anniversary", day)
    return periods.period_containing(anchor, subscription.billing_cycle, on,
                                     day=day if fixed else None)


def counted_bytes(profile: InternetProfile, download: int, upload: int) -> int:
    """What counts against a cap or a usage charge: download, and upload unless excluded."""
    return download + (upload if profile.count_upload_in_usage else 0)


def data_limit(profile: InternetProfile, service: ServiceInstance) -> int | None:
    """The cap in bytes: the subscriber's override where the package allows it, else the
    package's; None = no cap."""
    gb = profile.data_limit_gb
    if service.data_limit_gb_override and (profile.allow_subscriber_overrides
                                          or profile.usage_allow_subscriber_custom):
        gb = service.data_limit_gb_override
    return gb * GB if gb else None


def period_totals(session: Session, service_ids: list[int], first: dt.date, last: dt.date
                  ) -> dict[int, tuple[int, int, int]]:
    """service id -> (download bytes, upload bytes, online seconds) from `first` to `last`."""
    rows = session.execute(
        sa.select(UsageDaily.service_id, sa.func.sum(UsageDaily.download_bytes),
                  sa.func.sum(UsageDaily.upload_bytes), sa.func.sum(UsageDaily.session_seconds))
        .where(among(UsageDaily.service_id, service_ids), UsageDaily.day >= first,
               UsageDaily.day <= last).group_by(UsageDaily.service_id))
    return {sid: (int(d or 0), int(u or 0), int(t or 0)) for sid, d, u, t in rows}


def _exceeds_included(profile: InternetProfile, service: ServiceInstance,
                      totals: tuple[int, int, int]) -> bool:
    """Usage billing set to disconnect once the included amount is used up."""
    from headend.network.usage_billing import used_units

    if not (profile.usage_billing_enabled and profile.usage_disconnect_on_exceed):
        return False
    included = service.usage_included_override if (
        profile.usage_allow_subscriber_custom and service.usage_included_override is not None
    ) else profile.usage_included_amount
    return used_units(profile, *totals) > (included or 0)


def cap_states(session: Session, rows: list[tuple[ServiceInstance, Subscription,
                                                   InternetProfile]],
               today: dt.date) -> dict[int, str]:
    """service id -> "throttled" or "capped" for the services over their limit today."""
    watched = [(service, sub, profile) for service, sub, profile in rows
               if data_limit(profile, service) is not None
               or (profile.usage_billing_enabled and profile.usage_disconnect_on_exceed)]
    if not watched:
        return {}
    defaults = drafting.settings(session)
    by_start: dict[dt.date, list[int]] = defaultdict(list)
    for service, sub, _ in watched:
        by_start[usage_period(sub, defaults, today).start].append(service.id)
    totals: dict[int, tuple[int, int, int]] = {}
    for start, ids in by_start.items():
        totals |= period_totals(session, ids, start, today)
    out = {}
    for service, _, profile in watched:
        used = totals.get(service.id, (0, 0, 0))
        limit = data_limit(profile, service)
        if _exceeds_included(profile, service, used):
            out[service.id] = CAPPED
        elif limit is not None and counted_bytes(profile, used[0], used[1]) >= limit:
            throttles = profile.throttled_download and profile.throttled_upload
            out[service.id] = THROTTLED if throttles and not profile.disconnect_at_limit \
                else CAPPED
    return out


