"""`headend ...`: the operator's command line."""

from __future__ import annotations

import click

from headend.app import create_app


@click.group()
@click.option("--config", "config_path", envvar="HEADEND_CONFIG", default=None,
              help="Path of the deployment's config.py (default: ./config.py).")
@click.pass_context
def main(ctx, config_path):
    """Headend: billing, subscribers and network provisioning for ISPs."""
    ctx.obj = {"config": config_path}


def _app(ctx):
    return create_app(ctx.obj["config"])


@main.group()
def db():
    """Database schema."""


@db.command("upgrade")
@click.option("--revision", default="head")
@click.pass_context
def db_upgrade(ctx, revision):
    """Apply migrations, then create permissions and roles."""
    from headend.migrate import upgrade

    upgrade(_app(ctx.parent), revision)
    click.echo(f"database at {revision}")


@db.command("revision")
@click.option("-m", "--message", required=True)
@click.option("--rev-id", default=None)
@click.pass_context
def db_revision(ctx, message, rev_id):
    """Autogenerate a migration from the models (developers)."""
    from headend.migrate import revision

    revision(_app(ctx.parent), message, rev_id)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True)
@click.option("--threads", default=8, show_default=True)
@click.pass_context
def run(ctx, host, port, threads):
    """Serve the admin UI and API."""
    import waitress

    app = _app(ctx)
    click.echo(f"Headend admin UI on http://{host}:{port}/")
    waitress.serve(app, host=host, port=port, threads=threads)


@main.command()
@click.option("--if-empty", is_flag=True, help="Do nothing when the demo data is loaded.")
@click.pass_context
def demo(ctx, if_empty):
    """Load demo data: two tenants, their catalog, subscribers, and a user per role."""
    from headend.db import db
    from headend.demo import PASSWORD, demo_loaded, load_demo

    app = _app(ctx)
    with app.app_context():
        loaded = demo_loaded(db.session)
    if loaded:
        if if_empty:
            click.echo(f"demo data already loaded; log in as operator / {PASSWORD}")
            return
        raise click.ClickException("demo data already loaded")
    logins = load_demo(app)
    click.echo(f"\nDemo logins (password for all: {PASSWORD}):")
    for username, role, tenant in logins:
        click.echo(f"  {username:<22} {role:<11} {tenant}")


@main.command("create-operator")
@click.option("--username", required=True)
@click.option("--password", required=True)
@click.option("--email", required=True)
@click.pass_context
def create_operator(ctx, username, password, email):
    """Create a platform operator (sees and manages every tenant)."""
    app = _app(ctx)
    with app.app_context():
        sm = app.appbuilder.sm
        user = sm.add_user(username, "Platform", "Operator", email, sm.find_role(
            app.config["AUTH_ROLE_ADMIN"]), password)
        if not user:
            raise click.ClickException("could not create the user (name or email taken?)")
    click.echo(f"operator {username} created")


@main.command("create-api-key")
@click.option("--username", required=True)
@click.option("--name", "key_name", required=True, help="What the key is for.")
@click.pass_context
def create_api_key(ctx, username, key_name):
    """Create an API key for a user; it is shown once."""
    app = _app(ctx)
    with app.app_context():
        sm = app.appbuilder.sm
        user = sm.find_user(username=username)
        if user is None:
            raise click.ClickException(f"no user {username}")
        created = sm.create_api_key(user, key_name)
    click.echo(created["key"])


@main.command("bill-run")
@click.option("--date", "run_date", type=click.DateTime(["%Y-%m-%d"]), default=None,
              help="The run date (default: today).")
@click.option("--tenant", "tenant_slug", default=None, help="Only this tenant (its slug).")
@click.option("--dry-run", is_flag=True, help="Print what would be invoiced; write nothing.")
@click.option("--chunk-size", default=2000, show_default=True,
              help="Subscriptions per transaction.")
@click.pass_context
def bill_run(ctx, run_date, tenant_slug, dry_run, chunk_size):
    """Invoice every due subscription-period (exactly once; safe to rerun)."""
    import datetime as dt

    from headend.billing.run import bill_run as run
    from headend.billing.run import count_candidates
    from headend.db import db
    from headend.errors import ValidationFailed
    from headend.tenancy.context import acting_as

    day = run_date.date() if run_date else dt.date.today()
    app = _app(ctx)
    with app.app_context(), acting_as(None, actor_name="billing run"):
        try:
            total = count_candidates(db.session, day, tenant_slug)
            label = f"{'dry run' if dry_run else 'billing'} {day}"
            with click.progressbar(length=total, label=label, show_pos=True) as bar:
                results = run(db.session, day, tenant_slug=tenant_slug, dry_run=dry_run,
                              chunk_size=chunk_size, progress=bar.update)
        except ValidationFailed as exc:
            raise click.ClickException(str(exc.errors)) from exc
    for result in results:
        click.echo(("would invoice " if dry_run else "invoiced ") + result.describe())
        if dry_run:
            for line in result.sample:
                click.echo(f"    {line}")


@main.command("collections")
@click.option("--date", "run_date", type=click.DateTime(["%Y-%m-%d"]), default=None,
              help="The run date (default: today).")
@click.option("--tenant", "tenant_slug", default=None, help="Only this tenant (its slug).")
@click.option("--dry-run", is_flag=True, help="Print what would be done; write nothing.")
@click.pass_context
def collections(ctx, run_date, tenant_slug, dry_run):
    """Write-offs, late fees, suspension notices and suspensions (once each; safe to rerun)."""
    import datetime as dt

    from headend.db import db
    from headend.dunning.collect import count_candidates, run_collections, tenants
    from headend.errors import ValidationFailed
    from headend.tenancy.context import acting_as

    day = run_date.date() if run_date else dt.date.today()
    app = _app(ctx)
    results = []
    with app.app_context():
        try:
            chosen = tenants(db.session, tenant_slug)
            total = sum(count_candidates(db.session, day, t) for t, _ in chosen)
            db.session.rollback()
            label = f"{'dry run' if dry_run else 'collections'} {day}"
            with click.progressbar(length=total, label=label, show_pos=True) as bar:
                for tenant_id, _slug in chosen:
                    with acting_as(tenant_id, actor_name="collections"):
                        session = db.session
                        results.append(run_collections(
                            session, day, dry_run=dry_run, progress=bar.update,
                            after_step=None if dry_run else session.commit))
                        if dry_run:
                            session.rollback()
                        else:
                            session.commit()
        except ValidationFailed as exc:
            raise click.ClickException(str(exc.errors)) from exc
    for result in results:
        click.echo(("would do " if dry_run else "done ") + result.describe())


@main.command("import-payments")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--tenant", "tenant_slug", required=True, help="The tenant (its slug).")
@click.option("--method", default=None,
              help="Method for lines that leave it blank (cash, check, bank_transfer, other).")
@click.option("--allow-archived", is_flag=True, help="Accept payments to archived accounts.")
@click.pass_context
def import_payments(ctx, path, tenant_slug, method, allow_archived):
    """Post a deposit file (CSV: account, amount, method, date, reference, memo,
    transaction_id). Every line is checked first; importing the same file again posts nothing
    twice."""
    from pathlib import Path

    from headend.db import db
    from headend.dunning.collect import tenants
    from headend.errors import ValidationFailed
    from headend.payments.deposit_file import import_deposit_file
    from headend.tenancy.context import acting_as

    data = Path(path).read_bytes()
    app = _app(ctx)
    with app.app_context():
        try:
            ((tenant_id, _slug),) = tenants(db.session, tenant_slug)
            with acting_as(tenant_id, actor_name="payments import"):
                session = db.session
                with click.progressbar(length=data.count(b"\n"), label=Path(path).name,
                                       show_pos=True) as bar:
                    result = import_deposit_file(
                        session, data, default_method=method, allow_archived=allow_archived,
                        progress=bar.update, after_chunk=session.commit)
        except ValidationFailed as exc:
            db.session.rollback()
            raise click.ClickException("\n".join(
                f"{field}: {' '.join(reasons)}" for field, reasons in exc.errors.items())) from exc
    click.echo(result.describe())


@main.group()
def network():
    """Routers, RADIUS and the reconciler."""


@network.command("reconcile")
@click.option("--tenant", "tenant_slug", default=None, help="Only this tenant (its slug).")
@click.option("--dry-run", is_flag=True, help="Show the changes; apply nothing.")
@click.option("--verbose", "-v", is_flag=True, help="List the changes of each target.")
@click.pass_context
def network_reconcile(ctx, tenant_slug, dry_run, verbose):
    """Make routers and RADIUS equal to billing state (only the difference is applied)."""
    from headend.db import db
    from headend.dunning.collect import tenants
    from headend.errors import ValidationFailed
    from headend.network.reconcile import reconcile
    from headend.tenancy.context import acting_as

    app = _app(ctx)
    failed = False
    with app.app_context():
        try:
            chosen = tenants(db.session, tenant_slug)
        except ValidationFailed as exc:
            raise click.ClickException(str(exc.errors)) from exc
        with click.progressbar(chosen, label="dry run" if dry_run else "reconcile",
                               show_pos=True) as bar:
            reports = []
            for tenant_id, slug in bar:
                with acting_as(tenant_id, actor_name="network"):
                    results = reconcile(db.session, dry_run=dry_run)
                    if dry_run:
                        db.session.rollback()
                    else:
                        db.session.commit()
                reports.append((slug, results))
    for slug, results in reports:
        for result in results:
            failed |= result.status != "ok"
            click.echo(f"{slug} {result.describe()}")
            if verbose or dry_run:
                for line in result.sample:
                    click.echo(f"    {line}")
    if failed:
        raise SystemExit(1)


@network.command("import-usage")
@click.option("--tenant", "tenant_slug", default=None, help="Only this tenant (its slug).")
@click.pass_context
def network_import_usage(ctx, tenant_slug):
    """Count new traffic from RADIUS accounting into daily usage (only what grew since the
    last import: safe to rerun)."""
    from headend.db import db
    from headend.dunning.collect import tenants
    from headend.errors import ValidationFailed
    from headend.network.usage import import_usage
    from headend.tenancy.context import acting_as

    app = _app(ctx)
    reports = []
    with app.app_context():
        try:
            chosen = tenants(db.session, tenant_slug)
        except ValidationFailed as exc:
            raise click.ClickException(str(exc.errors)) from exc
        for tenant_id, slug in chosen:
            # How many records wait is not known before reading them: the bar counts them.
            with click.progressbar((n for n in ()), label=f"usage {slug}",
                                   show_pos=True) as bar, \
                    acting_as(tenant_id, actor_name="usage import"):
                try:
                    reports.append((slug, import_usage(db.session, progress=bar.update)
                                    .describe(), True))
                except Exception as exc:  # noqa: BLE001  (reported; the other tenants go on)
                    db.session.rollback()
                    reports.append((slug, f"failed - {type(exc).__name__}: {exc}", False))
    for slug, report, _ok in reports:
        click.echo(f"{slug} {report}")
    if not all(ok for _slug, _report, ok in reports):
        raise SystemExit(1)


@main.command()
@click.argument("queues", nargs=-1)
@click.option("--burst", is_flag=True, help="Stop when the queues are empty.")
@click.option("--with-scheduler", is_flag=True, help="Also run RQ's scheduler (enqueue_at).")
@click.pass_context
def worker(ctx, queues, burst, with_scheduler):
    """Run an RQ worker (default queues: billing payments network documents)."""
    from headend.jobs import QUEUES, run_worker

    unknown = [q for q in queues if q not in QUEUES]
    if unknown:
        raise click.BadParameter(f"unknown queue(s) {', '.join(unknown)}; "
                                 f"expected {', '.join(QUEUES)}")
    app = _app(ctx)
    if not app.config.get("REDIS_URL"):
        raise click.ClickException("REDIS_URL is not set: jobs run inline, no worker needed")
    run_worker(app, list(queues), burst=burst, with_scheduler=with_scheduler)


@main.command()
@click.option("--once", is_flag=True, help="Enqueue today's work and exit.")
@click.option("--at-hour", default=1, show_default=True, help="Hour of the daily run.")
@click.pass_context
def scheduler(ctx, once, at_hour):
    """Enqueue the daily work (billing run, collections, reconcile) now and then every day,
    and the hourly work (usage import) every hour."""
    from headend.jobs import run_scheduler

    run_scheduler(_app(ctx), once=once, at_hour=at_hour)


import headend.mail.cli  # noqa: E402, F401  (adds `headend mail send-queued`)

if __name__ == "__main__":
    main()
