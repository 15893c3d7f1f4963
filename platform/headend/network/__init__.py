"""Network state: routers and RADIUS NAS, service credentials, the desired state of every
target computed from billing state, and the reconciler that makes targets equal to it."""

REGISTRARS = ("views", "api")
