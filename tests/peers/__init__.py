"""Protocol-level fakes of the outside services Headend talks to (used by tests)."""
