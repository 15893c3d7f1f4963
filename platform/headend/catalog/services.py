"""Catalog rules (being built): the default chart of accounts for a new tenant."""


def create_default_chart(session):
    """Placeholder until the catalog lands: creates the tenant's default chart of accounts."""
