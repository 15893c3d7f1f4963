"""The fake AvaTax server lives with the other protocol fakes in the repository's tests/peers."""

from tests.peers.avatax import avatax_server  # noqa: F401  (a fixture)
