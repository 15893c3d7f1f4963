"""Network pages: Network > Routers (routers and NAS), Preview (a dry run of every target and
"Apply now"), Changes (what the reconciler did, and when), Settings (how credentials are made),
and the subscriber profile's Network box (activate and deactivate each Internet service, its
usage). Rules live in headend.network.services and .reconcile; these views read forms and
render results."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from flask import current_app, flash, jsonify, redirect, render_template, request, url_for
from flask_appbuilder import BaseView, expose, has_access
from markupsafe import Markup
from sqlalchemy import select

from headend.billing import drafting
from headend.db import db, utcnow
from headend.network import caps, services
from headend.network.desired import profile_rate, short
from headend.network.models import (
    ROUTER_KINDS,
    NetworkChange,
    NetworkSettings,
    Router,
    UsageDaily,
)
from headend.network.reconcile import reconcile
from headend.secrets import unseal
from headend.subscribers.models import ServiceInstance, Subscriber
from headend.tenancy import permissions as perms
from headend.ui import PermissionsMixin, add_view, formatters_for, labels_for, titled
from headend.views_base import (
    NO_TENANT,
    WRITE_ERRORS,
    HeadendInterface,
    HeadendModelView,
    TenantPagesMixin,
    WriteRefused,
    acting,
    commit_service,
    flash_errors,
    row_or_404,
)

CATEGORY = "Network"
CHART_DAYS = 30
GB = Decimal(1_000_000_000)
ROUTER_FIELDS = ("name", "kind", "address", "api_port", "username", "password",
                 "radius_secret", "coa_port")
ACTIVATE_FIELDS = ("username", "password", "static_ip", "router_id", "download_override",
                   "upload_override")


def can(permission: str) -> bool:
    return current_app.appbuilder.sm.has_access(permission, perms.NETWORK)



def number(raw):
    """A whole number typed in a form; anything else goes to the service as typed, so that
    the service refuses it by field like any other bad value."""
    text = (raw or "").strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        return text


# --- Network > Routers -----------------------------------------------------------------------

def router_values(router: Router | None) -> dict:
    """What the form shows of a router: never its password or RADIUS secret."""
    if router is None:
        return {"kind": "mikrotik", "api_port": "8728", "coa_port": "3799", "active": True}
    return {"name": router.name, "kind": router.kind, "address": router.address,
            "api_port": str(router.api_port), "username": router.username or "",
            "coa_port": str(router.coa_port), "active": router.active}


def router_arguments(values: dict) -> dict:
    return {"name": values.get("name", ""), "kind": values.get("kind", ""),
            "address": values.get("address", ""), "api_port": number(values.get("api_port")),
            "username": (values.get("username") or "").strip() or None,
            "password": values.get("password") or None,
            "radius_secret": values.get("radius_secret") or None,
            "coa_port": number(values.get("coa_port")), "active": bool(values.get("active"))}


class RouterView(PermissionsMixin, BaseView):
    """The tenant's routers and NAS with the last reconcile of each (and of RADIUS)."""

    route_base = "/network/routers"
    class_permission_name = perms.NETWORK
    pk_model = Router  # what the <pk> names, for the tenant isolation walker
    default_view = "index"
    method_permission_name = {"index": perms.READ, "add": perms.WRITE, "edit": perms.WRITE,
                              "deactivate": perms.WRITE}

    @expose("/")
    @has_access
    def index(self):
        if not acting():
            flash(NO_TENANT, "warning")
            return self.render_template("network/routers.html", acting=False, routers=[],
                                        radius=None, can_write=False)
        return self.render_template(
            "network/routers.html", acting=True,
            routers=db.session.scalars(select(Router).order_by(Router.name)).all(),
            radius=db.session.scalar(select(NetworkSettings)), can_write=can("can_write"))

    @expose("/add", methods=["GET", "POST"])
    @has_access
    def add(self):
        return self._form(None)

    @expose("/<int:pk>/edit", methods=["GET", "POST"])
    @has_access
    def edit(self, pk):
        return self._form(row_or_404(Router, pk))

    def _form(self, router: Router | None):
        if request.method == "GET" or not acting():
            if not acting():
                flash(NO_TENANT, "danger" if request.method == "POST" else "warning")
            return self._page(router, router_values(router), {})
        values = {f: request.form.get(f, "") for f in ROUTER_FIELDS}
        values["active"] = request.form.get("active") == "y" if router else True
        saved, errors = commit_service(services.save_router, router,
                                       **router_arguments(values), subject="router")
        if errors:
            return self._page(router, values | {"password": "", "radius_secret": ""}, errors)
        flash(f"Router {saved.name} saved", "success")
        return redirect(url_for("RouterView.index"))

    def _page(self, router, values, errors):
        stored = set(unseal(router.secret_config)) if router is not None else set()
        return self.render_template(
            "network/router_form.html", router=router, values=values, errors=errors,
            kinds=ROUTER_KINDS, stored=stored, acting=acting())

    @expose("/<int:pk>/deactivate", methods=["POST"])
    @has_access
    def deactivate(self, pk):
        router = row_or_404(Router, pk)
        if not acting():
            flash(NO_TENANT, "danger")
            return redirect(url_for("RouterView.index"))
        kept = router_arguments(router_values(router))
        _, errors = commit_service(services.save_router, router, **kept | {"active": False},
                                   subject="router")
        if errors:
            flash_errors(errors)
        else:
            flash(f"{router.name} deactivated: the reconciler no longer manages it", "success")
        return redirect(url_for("RouterView.index"))


# --- the profile's Network box and a service's activation ----------------------------------

def internet_services(sub: Subscriber) -> list[tuple[ServiceInstance, object]]:
    """The subscriber's Internet services with their package's profile, oldest first."""
    out = []
    for subscription in sub.subscriptions:
        for service in subscription.services:
            profile = services.internet_profile(db.session, service)
            if profile is not None:
                out.append((service, profile))
    return sorted(out, key=lambda pair: pair[0].id)


def gigabytes(octets: int) -> Decimal:
    return (Decimal(octets or 0) / GB).quantize(Decimal("0.01"))


def usage_days(service_ids: list[int], today: dt.date) -> dict[int, list[tuple]]:
    """Per service, each of the last CHART_DAYS days: (day, download GB, upload GB)."""
    first = today - dt.timedelta(days=CHART_DAYS - 1)
    found = {(u.service_id, u.day): u for u in db.session.scalars(select(UsageDaily).where(
        UsageDaily.service_id.in_(service_ids), UsageDaily.day >= first,
        UsageDaily.day <= today))}
    days = [first + dt.timedelta(days=n) for n in range(CHART_DAYS)]
    out = {}
    for service_id in service_ids:
        rows = [(day, found.get((service_id, day))) for day in days]
        out[service_id] = [(day, gigabytes(u.download_bytes if u else 0),
                            gigabytes(u.upload_bytes if u else 0)) for day, u in rows]
    return out


def speeds_text(profile, service: ServiceInstance) -> str:
    rate = profile_rate(profile, service)
    return f"{short(rate.down)} down / {short(rate.up)} up"


def period_usage(service: ServiceInstance, profile, defaults, today: dt.date) -> dict:
    """This usage period's traffic in GB, and what counts toward the data cap (if any)."""
    period = caps.usage_period(service.subscription, defaults, today)
    down, up, _ = caps.period_totals(db.session, [service.id], period.start,
                                     period.last_day).get(service.id, (0, 0, 0))
    limit = caps.data_limit(profile, service)
    return {"period": period, "download": gigabytes(down), "upload": gigabytes(up),
            "total": gigabytes(down + up),
            "counted": gigabytes(caps.counted_bytes(profile, down, up)),
            "limit": gigabytes(limit) if limit else None}


def service_rows(sub: Subscriber) -> list[dict]:
    today, defaults = utcnow().date(), drafting.settings(db.session)
    pairs = internet_services(sub)
    usage = usage_days([s.id for s, _ in pairs], today)
    return [{"service": service, "profile": profile, "speeds": speeds_text(profile, service),
             "usage": usage[service.id],
             "period_usage": period_usage(service, profile, defaults, today),
             "values": activation_values(service)} for service, profile in pairs]


def activation_values(service: ServiceInstance) -> dict:
    return {"username": service.username or "", "password": service.password or "",
            "static_ip": service.static_ip or "", "router_id": str(service.router_id or ""),
            "download_override": str(service.download_override or ""),
            "upload_override": str(service.upload_override or "")}


def active_routers() -> list[Router]:
    return db.session.scalars(select(Router).where(Router.active.is_(True))
                              .order_by(Router.name)).all()


def network_box(sub: Subscriber) -> Markup:
    """The profile's Network section."""
    if not can("can_read"):
        return Markup("")
    routers = db.session.scalars(select(Router).order_by(Router.name)).all()
    return Markup(render_template(
        "network/_profile_box.html", sub=sub, rows=service_rows(sub),
        routers={r.id: r for r in routers}, choices=[r for r in routers if r.active],
        can_write=can("can_write") and acting()))


def profile_url(service: ServiceInstance) -> str:
    return url_for("SubscriberView.profile",
                   pk=service.subscription.subscriber_id) + "#network"


class ServiceNetworkView(PermissionsMixin, BaseView):
    """Activate (with Autofill) and Deactivate one Internet service."""

    route_base = "/network/service"
    class_permission_name = perms.NETWORK
    pk_model = ServiceInstance
    method_permission_name = {"activate": perms.WRITE, "deactivate": perms.WRITE,
                              "autofill": perms.WRITE}

    @expose("/<int:pk>/activate", methods=["GET", "POST"])
    @has_access
    def activate(self, pk):
        service = row_or_404(ServiceInstance, pk)
        if request.method == "GET":
            return self._page(service, activation_values(service), {})
        values = {f: request.form.get(f, "") for f in ACTIVATE_FIELDS}
        if not acting():
            flash(NO_TENANT, "danger")
            return self._page(service, values, {})
        if "autofill" in request.form:
            values["username"], values["password"] = services.autofill(db.session, service.id)
            db.session.rollback()  # Autofill saves nothing (not even a first settings row)
            return self._page(service, values, {})
        done, errors = commit_service(
            services.activate, service.id, username=values["username"].strip(),
            password=values["password"], static_ip=values["static_ip"].strip() or None,
            router_id=number(values["router_id"]),
            download_override=number(values["download_override"]),
            upload_override=number(values["upload_override"]), subject="service")
        if errors:
            return self._page(service, values, errors)
        flash(f"{done.label} activated as {done.username}", "success")
        return redirect(profile_url(done))

    def _page(self, service, values, errors):
        return self.render_template(
            "network/activate.html", service=service, values=values, errors=errors,
            profile=services.internet_profile(db.session, service), routers=active_routers(),
            back=profile_url(service), acting=acting())

    @expose("/<int:pk>/deactivate", methods=["POST"])
    @has_access
    def deactivate(self, pk):
        service = row_or_404(ServiceInstance, pk)
        if not acting():
            flash(NO_TENANT, "danger")
            return redirect(profile_url(service))
        done, errors = commit_service(services.deactivate, service.id, subject="service")
        if errors:
            flash_errors(errors)
        else:
            flash(f"{done.label} deactivated: its network entries are removed", "success")
        return redirect(profile_url(service))

    @expose("/<int:pk>/autofill", methods=["POST"])
    @has_access
    def autofill(self, pk):
        """The Autofill button's JSON: a free username and a new password, nothing saved."""
        service = row_or_404(ServiceInstance, pk)
        if not acting():
            return jsonify(message={"tenant": [NO_TENANT]}), 409
        username, password = services.autofill(db.session, service.id)
        db.session.rollback()
        response = jsonify(username=username, password=password)
        response.headers["Cache-Control"] = "no-store"
        return response


# --- Network > Preview -------------------------------------------------------------------------

class NetworkPreviewView(PermissionsMixin, BaseView):
    """What a reconcile would change on every target now (drift included), and Apply now."""

    route_base = "/network/preview"
    class_permission_name = perms.NETWORK
    default_view = "index"
    method_permission_name = {"index": perms.READ, "apply": perms.WRITE}

    @expose("/")
    @has_access
    def index(self):
        if not acting():
            flash(NO_TENANT, "warning")
            return self.render_template("network/preview.html", acting=False, results=[],
                                        can_write=False)
        results = reconcile(db.session, dry_run=True)
        db.session.rollback()  # a dry run writes nothing; a GET never does
        return self.render_template("network/preview.html", acting=True, results=results,
                                    can_write=can("can_write"))

    @expose("/apply", methods=["POST"])
    @has_access
    def apply(self):
        if not acting():
            flash(NO_TENANT, "danger")
            return redirect(url_for("NetworkPreviewView.index"))
        try:
            results = reconcile(db.session)
            db.session.commit()
        except WRITE_ERRORS as exc:
            db.session.rollback()
            flash(str(WriteRefused(exc)), "danger")
            return redirect(url_for("NetworkPreviewView.index"))
        for result in results:
            flash(result.describe(), "success" if result.status == "ok" else "danger")
        if not results:
            flash("Nothing to reconcile: no router plugin is enabled (Settings > Plugins)",
                  "warning")
        return redirect(url_for("NetworkPreviewView.index"))


# --- Network > Changes -------------------------------------------------------------------------

def attributes_text(value) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted((value or {}).items())) or "—"


@titled("Network changes", "network change")
class NetworkChangeView(TenantPagesMixin, HeadendModelView):
    """The reconciler's record, newest first: what happened to a subscriber's queue and when."""

    route_base = "/network/changes"
    datamodel = HeadendInterface(NetworkChange)
    class_permission_name = perms.NETWORK
    include_route_methods = {"list", "show"}
    list_columns = ["at", "target", "key", "action", "result", "error"]
    show_columns = ["at", "target", "key", "action", "attributes", "result", "error"]
    search_columns = ["key", "result", "target", "action", "at"]
    order_columns = ["at", "target", "key", "result"]
    base_order = ("at", "desc")
    label_columns = labels_for(NetworkChange, at="When", key="Entry")
    formatters_columns = formatters_for(NetworkChange) | {"attributes": attributes_text}



# --- Network > Settings ------------------------------------------------------------------------

class NetworkSettingsView(PermissionsMixin, BaseView):
    """The username pattern and password length Autofill uses."""

    route_base = "/network/settings"
    class_permission_name = perms.NETWORK
    default_view = "index"
    method_permission_name = {"index": perms.READ, "save": perms.WRITE}

    @expose("/")
    @has_access
    def index(self):
        if not acting():
            flash(NO_TENANT, "warning")
            return self._page({}, {})
        row = db.session.scalar(select(NetworkSettings)) or NetworkSettings(
            username_pattern="{account}-{n}", password_length=12)
        return self._page({"username_pattern": row.username_pattern,
                           "password_length": str(row.password_length)}, {})

    @expose("/", methods=["POST"])
    @has_access
    def save(self):
        values = {f: request.form.get(f, "") for f in ("username_pattern", "password_length")}
        if not acting():
            flash(NO_TENANT, "danger")
            return self._page(values, {})
        _, errors = commit_service(
            services.save_settings, username_pattern=values["username_pattern"],
            password_length=number(values["password_length"]), subject="settings")
        if errors:
            return self._page(values, errors)
        flash("Network settings saved", "success")
        return redirect(url_for("NetworkSettingsView.index"))

    def _page(self, values, errors):
        example = services.example_username(values.get("username_pattern") or "")
        return self.render_template("network/settings.html", values=values, errors=errors,
                                    example=example, acting=acting(),
                                    can_write=can("can_write"))


def register(appbuilder):
    add_view(appbuilder, RouterView, "Routers", category=CATEGORY, icon="fa-server")
    add_view(appbuilder, NetworkPreviewView, "Preview", category=CATEGORY, icon="fa-eye")
    add_view(appbuilder, NetworkChangeView, "Changes", category=CATEGORY, icon="fa-history")
    add_view(appbuilder, NetworkSettingsView, "Network settings", category=CATEGORY,
             icon="fa-cog")
    appbuilder.add_view_no_menu(ServiceNetworkView)
    current_app.jinja_env.globals["network_box"] = network_box
