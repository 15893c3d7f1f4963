"""localstripe on loopback lives with the other protocol peers in the repository's tests/peers."""

from tests.peers.stripe import localstripe_session, stripe_server  # noqa: F401  (fixtures)
