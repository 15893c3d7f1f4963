"""Every hook a Headend plugin can implement (documented in docs/plugins.md)."""

import pluggy

hookspec = pluggy.HookspecMarker("headend")
hookimpl = pluggy.HookimplMarker("headend")


@hookspec
def register_admin_views(appbuilder):
    """Add the plugin's own admin views or APIs to the app."""
