"""Staff side of the portal: "Invite to portal" on a subscriber (emails a link to choose a
password; again later, a fresh link, which also opens a closed login), closing and opening the
login, and the profile's Portal box showing it."""

from __future__ import annotations

from flask import current_app, flash, redirect, render_template, request, url_for
from flask_appbuilder import BaseView, expose, has_access
from markupsafe import Markup

from headend.db import db
from headend.portal import accounts
from headend.subscribers.models import Subscriber
from headend.tenancy import permissions as perms
from headend.ui import PermissionsMixin
from headend.views_base import commit_service, flash_errors, public_base_url, row_or_404


def can(permission: str) -> bool:
    return current_app.appbuilder.sm.has_access(permission, perms.PORTAL)


class PortalInviteView(PermissionsMixin, BaseView):
    route_base = "/portal-admin"
    class_permission_name = perms.PORTAL
    method_permission_name = {"invite": perms.WRITE, "access": perms.WRITE}
    pk_model = Subscriber

    @expose("/invite/<int:pk>", methods=["POST"])
    @has_access
    def invite(self, pk):
        sub = row_or_404(Subscriber, pk)
        account, errors = commit_service(accounts.invite, sub.id, base_url=public_base_url(),
                                         subject="portal")
        if errors:
            flash_errors(errors)
        else:
            flash(f"Portal invitation emailed to {account.login}", "success")
        return redirect(url_for("SubscriberView.profile", pk=sub.id) + "#portal")

    @expose("/access/<int:pk>", methods=["POST"])
    @has_access
    def access(self, pk):
        sub = row_or_404(Subscriber, pk)
        active = request.form.get("active") == "1"
        account, errors = commit_service(accounts.set_access, sub.id, active, subject="portal")
        if errors:
            flash_errors(errors)
        else:
            flash(f"Portal login {account.login} {'opened' if active else 'closed'}", "success")
        return redirect(url_for("SubscriberView.profile", pk=sub.id) + "#portal")


def portal_box(sub: Subscriber) -> Markup:
    """The profile's Portal box: the subscriber's login, its last use, and the invite button."""
    if not can("can_read"):
        return Markup("")
    return Markup(render_template(
        "portal/_profile_box.html", sub=sub, account=accounts.account_of(db.session, sub.id),
        can_write=can("can_write")))


def register(appbuilder):
    appbuilder.add_view_no_menu(PortalInviteView)
    current_app.jinja_env.globals["portal_box"] = portal_box
