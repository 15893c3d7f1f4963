"""Plugin discovery and per-tenant plugin sets (minimal until the plugin system lands)."""

import pluggy

from headend.plugins import hookspecs


def init_plugins(app, appbuilder):
    pm = pluggy.PluginManager("headend")
    pm.add_hookspecs(hookspecs)
    app.extensions["headend_plugins"] = pm
    return pm
