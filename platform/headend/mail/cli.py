"""`headend mail send-queued`: send what waits in the outbox now (without Redis nothing else
retries a failed message; with it, this is the operator's "send now"). Imported by
headend.cli, which it adds the `mail` group to."""

from __future__ import annotations

import click
import sqlalchemy as sa

from headend.cli import _app, main


@main.group()
def mail():
    """Email: the outbox."""


@mail.command("send-queued")
@click.option("--tenant", "tenant_slug", default=None, help="Only this tenant (its slug).")
@click.pass_context
def send_queued(ctx, tenant_slug):
    """Send every tenant's due messages: queued ones, retries whose time came, new notices."""
    from headend.db import db
    from headend.mail.delivery import deliver
    from headend.mail.models import MailSettings
    from headend.tenancy.context import acting_as
    from headend.tenancy.models import Tenant

    app = _app(ctx)
    with app.app_context():
        with acting_as(None):
            stmt = (sa.select(Tenant.id, Tenant.slug)
                    .join(MailSettings, MailSettings.tenant_id == Tenant.id)
                    .where(MailSettings.enabled.is_(True)).order_by(Tenant.id))
            if tenant_slug:
                stmt = stmt.where(Tenant.slug == tenant_slug)
            tenants = db.session.execute(stmt).all()
            db.session.rollback()
        if tenant_slug and not tenants:
            raise click.ClickException(f"no tenant {tenant_slug!r} with email on")
        for tenant_id, slug in tenants:
            with acting_as(tenant_id, actor_name="mail"):
                done = deliver(db.session)
            click.echo(f"{slug}: {done.sent} sent, {done.failed} failed")
