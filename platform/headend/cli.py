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


if __name__ == "__main__":
    main()
