"""The tenant's face: name, logo, colours and the primary, billing and "contact us" details
shown on invoices, emails, the signup page and the subscriber portal."""

REGISTRARS = ("views",)
