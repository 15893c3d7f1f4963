"""Invoice documents: the tenant's invoice design, rendering through its InvoiceForm plugin,
single PDFs and merged batch prints built on the documents queue."""

REGISTRARS = ("views", "api")
