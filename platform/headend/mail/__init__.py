"""Email: the tenant's SMTP settings, and an outbox of messages (invoices, receipts, notices,
portal invitations) delivered by a job on the documents queue, each send recorded."""

REGISTRARS = ("views", "api")
